"""Masked LM on a memory-mapped WordPiece token file: the windows hold the ids (and word starts) of the
in-memory tokenisation, the masking has the in-memory path's statistics, and train mlm runs on it."""

from __future__ import annotations

import random

import pytest
import torch

from attnkit.cli.main import main
from attnkit.data.pretraining import read_documents, tokenize_documents
from attnkit.data.stream import TokenFile
from attnkit.data.stream_mlm import StreamMLMTask
from attnkit.data.wordpiece import WordPieceTokenizer
from attnkit.objectives.mlm import IGNORE, MaskingConfig
from attnkit.training.mlm import PretrainingTask

WORDS = "the quick brown fox jumps over lazy dogs while seven wizards quietly hex unbelievably jovial kangaroos".split()
SMALL = ["--set", "model.n_layers=1", "--set", "model.d_model=32", "--set", "model.n_heads=2", "--set", "model.d_ff=64",
         "--set", "train.device=cpu", "--set", "train.schedule.warmup=0", "--no-progress"]


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("smlm")
    rng = random.Random(0)
    files = []
    for f in range(3):
        paragraphs = ["\n".join(" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 12))) + "." for _ in range(rng.randint(3, 6)))
                      for _ in range(12)]
        files.append(root / f"doc{f}.txt")
        files[-1].write_text("\n\n".join(paragraphs) + "\n")
    tok = WordPieceTokenizer.train(files, 60)  # small: many words are split into ## pieces
    tok.save(root / "tokenizer.json")
    out = root / "corpus.bin"
    assert main(["data", "prepare", "--tokenizer", str(root / "tokenizer.json"), *map(str, files), "--out", str(out)]) == 0
    docs = tokenize_documents(read_documents(files), tok)  # the in-memory path of train mlm
    return root, out, WordPieceTokenizer.from_file(root / "tokenizer.json"), docs


def test_windows_hold_the_in_memory_ids_and_word_starts(corpus):
    _, out, tok, docs = corpus
    task = StreamMLMTask(TokenFile(out), tokenizer=tok, max_seq_len=24, batch_size=4)
    stream = task.file.read(0, len(task.file))
    text = ~torch.isin(stream, torch.tensor(tok.special_ids))
    want = [i for d in docs for s in d for i in s.ids]
    assert stream[text].tolist() == want  # the file: the sentences' ids, with the tokenizer's [CLS]/[SEP] around each file
    assert any(s.starts.count(False) for d in docs for s in d)  # the vocabulary does split words
    starts = [b for d in docs for s in d for b in s.starts]
    rows = task.rows(torch.arange(len(task.file) - 22))  # every window: row k is [CLS] stream[k : k + 22] [SEP]
    assert torch.equal(rows.ids[:, 1:-1], stream.unfold(0, 22, 1)[: len(rows.ids)])
    assert (rows.ids[:, 0] == tok.cls_id).all() and (rows.ids[:, -1] == tok.sep_id).all()
    begins = torch.cat([torch.ones(rows.ids.shape[0], 1, dtype=torch.bool), rows.word_index.diff(dim=1) > 0], dim=1)
    row0 = begins[0][rows.maskable[0]].tolist()
    assert row0 == starts[: len(row0)]  # a word starts where the in-memory tokenisation says (a ## piece continues one)
    for seed in (0, 1):
        s = task.train.starts(seed, 0, 3)
        assert int(s.max()) + 22 <= task.split
        assert torch.equal(task.rows(s).ids[:, 1:-1], stream[s[:, None] + torch.arange(22)])


def _rates(batches) -> torch.Tensor:
    """(selected / maskable, [MASK] / selected, unchanged / selected, specials selected)."""
    sel = maskable = masked = kept = special = 0
    for original, b in batches:
        picked = b.mlm_labels != IGNORE
        sel += int(picked.sum())
        maskable += int(b.maskable.sum())
        masked += int((picked & (b.ids == 4)).sum())
        kept += int((picked & (b.ids == original)).sum())
        special += int((picked & ~b.maskable).sum())
    return torch.tensor([sel / maskable, masked / sel, kept / sel, special])


def test_masking_statistics_match_the_in_memory_path(corpus):
    _, out, tok, docs = corpus
    assert tok.mask_id == 4
    stream = StreamMLMTask(TokenFile(out), tokenizer=tok, max_seq_len=24, batch_size=16)
    got = []
    for i, (starts, seed) in zip(range(150), ((stream.train.starts(0, 0, i), 1000 + i) for i in range(10**6))):
        got.append((stream.rows(starts).ids, stream.masked(starts, torch.Generator().manual_seed(seed))))
    memory = PretrainingTask(docs, range(len(docs)), [len(docs) - 1], tokenizer=tok, max_seq_len=24, batch_size=16, pair_task="none")
    want = []
    for epoch in range(12):
        for i, pairs in enumerate(zip(*[iter(memory.epoch_pairs(epoch, 0))] * 16)):
            from attnkit.data.pretraining import collate

            original = collate(pairs, cls_id=tok.cls_id, sep_id=tok.sep_id, pad_id=tok.pad_id, special_ids=tok.special_ids, with_labels=False).ids
            want.append((original, memory._batch(pairs, torch.Generator().manual_seed(epoch * 1000 + i))))
    a, b = _rates(got), _rates(want)
    assert a[3] == b[3] == 0  # [CLS], [SEP] and padding never chosen
    for _, batch in got[:20]:  # the output layer's slots hold each row's chosen positions (prediction_slots)
        chosen = batch.mlm_labels != IGNORE
        assert torch.equal(batch.mlm_targets[batch.mlm_targets != IGNORE], batch.mlm_labels[chosen])
    assert torch.allclose(a[:3], torch.tensor([0.15, 0.8, 0.1]), atol=0.015), a
    assert torch.allclose(a[:3], b[:3], atol=0.02), (a, b)


def test_whole_word_masking_takes_every_piece(corpus):
    _, out, tok, _ = corpus
    task = StreamMLMTask(TokenFile(out), tokenizer=tok, max_seq_len=24, batch_size=32, masking=MaskingConfig(whole_word=True))
    b = task.masked(task.train.starts(0, 0, 0), torch.Generator().manual_seed(0))
    picked = b.mlm_labels != IGNORE
    assert picked.any()
    for row in range(len(b.ids)):
        words = b.word_index[row]
        for w in words[picked[row]].unique():
            assert picked[row][(words == w) & b.maskable[row]].all()


def test_train_mlm_on_a_token_file(corpus, capsys):
    root, out, _, _ = corpus
    common = ["train", "mlm", "--set", f"data.tokens={out}", "--max-seq-len", "24", "--set", "data.valid_fraction=0.2",
              "--set", "train.steps=3", "--set", "train.batch_size=4", "--set", "train.eval.every=3", *SMALL]
    assert main([*common, "--out", str(root / "run")]) == 0
    assert "eval/mlm_loss" in (root / "run" / "metrics.jsonl").read_text()
    assert (root / "run" / "tokenizer.json").read_bytes() == (root / "tokenizer.json").read_bytes()
    assert main([*common, "--nsp", "--out", str(root / "nsp")]) == 2
    assert "--nsp needs sentence pairs" in capsys.readouterr().err

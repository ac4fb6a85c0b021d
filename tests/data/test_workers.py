"""Batches built in DataLoader worker processes (``train.execution.workers``): the batches the training
process builds itself, the same for each rank's share and after a resume, and the option checked."""

from __future__ import annotations

import dataclasses
import random
from itertools import islice

import pytest
import torch

from attnkit.cli.main import main
from attnkit.data.lm import LMTask
from attnkit.data.pretraining import cut_long_sentences, read_documents, tokenize_documents
from attnkit.data.stream import StreamLMTask, TokenFile
from attnkit.data.stream_mlm import StreamMLMTask
from attnkit.data.wordpiece import WordPieceTokenizer
from attnkit.data.workers import worker_batches
from attnkit.errors import ConfigError
from attnkit.models.bert import BertModel, bert_preset
from attnkit.models.bert_pretraining import BertPretraining, BertPretrainingConfig
from attnkit.training import ExecutionConfig, OptimConfig, ScheduleConfig, TrainConfig, Trainer
from attnkit.training.mlm import PretrainingTask

WORDS = "the quick brown fox jumps over lazy dogs while seven wizards quietly hex unbelievably jovial kangaroos".split()


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("workers")
    rng = random.Random(0)
    files = []
    for f in range(4):
        sentences = [" ".join(rng.choice(WORDS) for _ in range(rng.randint(4, 10))) + "." for _ in range(8)]
        files.append(root / f"doc{f}.txt")
        files[-1].write_text("\n".join(sentences) + "\n")
    tok = WordPieceTokenizer.train(files, 60)
    tok.save(root / "tokenizer.json")
    out = root / "corpus.bin"
    assert main(["data", "prepare", "--tokenizer", str(root / "tokenizer.json"), *map(str, files), "--out", str(out)]) == 0
    tok = WordPieceTokenizer.from_file(root / "tokenizer.json")
    docs = [cut_long_sentences(d, 10) for d in tokenize_documents(read_documents(files), tok)]  # halves of 24-token pairs
    return TokenFile(out), tok, docs


def _tensors(batch) -> list[torch.Tensor]:
    if isinstance(batch, torch.Tensor):
        return [batch]
    return [getattr(batch, f.name) for f in dataclasses.fields(batch) if isinstance(getattr(batch, f.name), torch.Tensor)]


def _in_process(task, seed: int, read):
    """The batches of ``task.batches`` (workers=0), epoch after epoch, each as the loss sees it."""
    epoch = 0
    while True:
        for item in task.batches(epoch, seed):
            yield read(item)
        epoch += 1


def test_workers_build_the_batches_of_the_training_process(corpus):
    """Masked-LM pairs (80/10/10 masks), masked token-file windows, token-file windows and in-memory
    text windows: 2 workers give the in-process batches, across an epoch boundary, from a mid-epoch
    start, and each of 2 ranks gets exactly its positions r, r + 2, ... of them."""
    file, tok, docs = corpus
    tasks = [
        (PretrainingTask(docs, range(3), [3], tokenizer=tok, max_seq_len=24, batch_size=4, pair_task="nsp"), lambda b: b),
        (StreamMLMTask(file, tokenizer=tok, max_seq_len=16, batch_size=3), None),
        (StreamLMTask(file, context=8, batch_size=4), None),
        (LMTask(file.read(0, len(file)), file.read(0, 40), context=8, batch_size=4), lambda b: b),
    ]
    tasks[1] = (tasks[1][0], tasks[1][0]._read)
    tasks[2] = (tasks[2][0], tasks[2][0].train.batch)
    for task, read in tasks:
        seed, n = 5, task.batch_count(0, 5)
        assert task.batch_count(1, 5) >= 2
        want = list(islice(_in_process(task, seed, read), 1, n + 3))  # from batch 1 of epoch 0 into epoch 1
        rank_of = [(0, 1, 2)] if not isinstance(task, StreamMLMTask) else [(0, 1, 2), (1, 2, 2)]
        for rank, world, workers in rank_of:
            got = list(islice(worker_batches(task, seed=seed, epoch=0, index=1, rank=rank, world=world, workers=workers), n + 2))
            assert [(e, i) for e, i, _ in got][:2] == [(0, 2), (0, 3)] and got[n - 1][:2] == (1, 1)  # positions after each batch
            assert [b is None for _, _, b in got] == [c % world != rank for c in range(n + 2)]
            for c, (_, _, b) in enumerate(got):
                if b is not None:
                    assert all(torch.equal(x, y) for x, y in zip(_tensors(b), _tensors(want[c]), strict=True)), (type(task).__name__, c)
        assert any((b.mlm_labels != -100).any() for b in want[:1]) if isinstance(task, PretrainingTask) else True


def _bert_run(corpus, out, steps: int, workers: int, *, resume: bool = False) -> tuple[list[float], dict[str, torch.Tensor]]:
    _, tok, docs = corpus
    task = PretrainingTask(docs, range(3), [3], tokenizer=tok, max_seq_len=24, batch_size=4, pair_task="nsp")
    torch.manual_seed(0)
    model = BertPretraining(BertPretrainingConfig(encoder=bert_preset("bert-test", vocab_size=tok.vocab_size, pad_id=tok.pad_id), pair_task="nsp"))
    # grad_accum=2 over epochs of 3 batches: steps straddle epoch boundaries; dropout draws from the main process's RNG
    cfg = TrainConfig(steps=steps, batch_size=4, grad_accum=2, log_every=1, save_every=2, device="cpu",
                      optim=OptimConfig(name="adamw", lr=1e-3), schedule=ScheduleConfig(kind="constant", warmup=0),
                      execution=ExecutionConfig(precision="fp32", workers=workers))
    losses = Trainer(model, task, cfg, out, progress=False).fit(resume=resume).losses
    return losses, {k: v.clone() for k, v in model.state_dict().items()}


def test_masked_lm_training_with_workers_equals_and_resumes(corpus, tmp_path):
    """BERT pretraining: 2 workers train exactly as 0 (bitwise on CPU), and 2 steps + resume + 2 steps
    with workers equal 4 straight steps."""
    straight, weights = _bert_run(corpus, tmp_path / "a", 4, 0)
    pooled, pooled_weights = _bert_run(corpus, tmp_path / "b", 4, 2)
    first, _ = _bert_run(corpus, tmp_path / "c", 2, 2)
    torch.manual_seed(12345)  # a new process: resume restores the RNG
    second, resumed_weights = _bert_run(corpus, tmp_path / "c", 4, 2, resume=True)
    assert pooled == straight and first + second == straight
    for k, v in weights.items():
        assert torch.equal(v, pooled_weights[k]) and torch.equal(v, resumed_weights[k]), k


def test_workers_option_is_checked(corpus, tmp_path, capsys):
    for bad in (-1, 10**5):
        with pytest.raises(ConfigError, match=r"train\.execution\.workers"):
            TrainConfig.from_dict({"execution": {"workers": bad}}, prefix="train.")
    text = tmp_path / "t.txt"
    text.write_text("some text to learn from, " * 40)
    assert main(["train", "lm", "--text", str(text), "--set", "train.execution.workers=-2", "--out", str(tmp_path / "x"), "--no-progress"]) == 2
    assert "train.execution.workers=-2" in capsys.readouterr().err
    _, tok, docs = corpus
    from attnkit.data.segments import XLLMTask

    stream = torch.arange(200) % 7
    with pytest.raises(ConfigError, match=r"train\.execution\.workers=2 is not supported by XLLMTask"):
        Trainer(BertModel(bert_preset("bert-test")), XLLMTask(stream, stream, segment=6, mem_len=6, batch_size=3),
                TrainConfig(steps=1, device="cpu", execution=ExecutionConfig(workers=2)), tmp_path / "y", progress=False)

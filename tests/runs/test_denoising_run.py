"""attnkit train t5|bart|mass through the one run path: the saved model is a Transformer that attnkit translate decodes with."""

from __future__ import annotations

import json

import pytest

import attnkit
from attnkit.cli.main import main
from attnkit.data.tokenizer import load_tokenizer

TEXT = "".join(f"To be, or not to be, that is the question {i}:\nWhether 'tis nobler in the mind to suffer\n"
               f"The slings and arrows of outrageous fortune.\n\n" for i in range(30))
TINY = ["--set", "model.d_model=16", "--set", "model.n_heads=2", "--set", "model.d_ff=32", "--set", "model.n_encoder_layers=1",
        "--set", "model.n_decoder_layers=1", "--set", "train.steps=4", "--set", "train.batch_size=4", "--set", "train.eval.every=2",
        "--set", "train.schedule.warmup=1", "--set", "train.device=cpu", "--set", "data.n_sentinels=6", "--vocab-size", "160",
        "--max-src-len", "24", "--set", "data.valid_fraction=0.1"]


@pytest.mark.parametrize("objective", ["t5", "bart", "mass"])
def test_trains_saves_and_translates(objective, tmp_path, capsys):
    (tmp_path / "t.txt").write_text(TEXT)
    out = tmp_path / "run"
    assert main(["train", objective, "--text", str(tmp_path / "t.txt"), "--out", str(out), "--no-progress", *TINY]) == 0
    record = json.loads((out / "run_config.json").read_text())
    assert record["task"] == objective and record["model"]["src_vocab_size"] == load_tokenizer(out / "model").get_vocab_size()
    assert json.loads((out / "eval.json").read_text())["steps"] == 4
    assert type(attnkit.load(out / "model")).__name__ == "Transformer"
    tok = load_tokenizer(out / "model")
    added = "<extra_id_5>" if objective == "t5" else "<mask>"
    assert tok.token_to_id(added) is not None and tok.encode(f"To {added} be").ids.count(tok.token_to_id(added)) == 1
    capsys.readouterr()
    assert main(["translate", "--model", str(out / "model"), "--beam", "1", "--device", "cpu", "To be, or not"]) == 0
    assert capsys.readouterr().out.count("\n") == 1


def test_too_few_sentinels_is_a_config_error(tmp_path, capsys):
    (tmp_path / "t.txt").write_text(TEXT)
    code = main(["train", "t5", "--text", str(tmp_path / "t.txt"), "--out", str(tmp_path / "run"), *TINY, "--max-src-len", "128",
                 "--set", "model.max_len=128"])
    assert code == 2 and "n_sentinels" in capsys.readouterr().err


def test_needs_text(tmp_path, capsys):
    assert main(["train", "bart", "--out", str(tmp_path / "run")]) == 2
    assert "--text" in capsys.readouterr().err


def test_translation_starts_from_a_denoised_model(tmp_path, capsys):
    import gzip

    from attnkit.runs.denoising import read_texts

    lines_de = [f"ein hund {i} läuft über die wiese ." for i in range(40)]
    lines_en = [f"a dog {i} runs across the meadow ." for i in range(40)]
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for split, n in (("train", slice(0, 32)), ("val", slice(32, 40))):
        (corpus / f"{split}.de").write_text("\n".join(lines_de[n]) + "\n")
        (corpus / f"{split}.en").write_text("\n".join(lines_en[n]) + "\n")
    (corpus / "mono.en.gz").write_bytes(gzip.compress(("\n".join(lines_en + lines_de) + "\n").encode()))
    assert len(read_texts([str(corpus / "mono.en.gz")], "lines")) == 80
    pre = tmp_path / "bart"
    assert main(["train", "bart", "--text", str(corpus / "mono.en.gz"), "--out", str(pre), "--no-progress", *TINY,
                 "--set", "data.documents=lines"]) == 0
    out = tmp_path / "mt"
    assert main(["train", "translate", "--data", str(corpus), "--src", "de", "--tgt", "en", "--out", str(out), "--no-progress",
                 "--set", f"data.init={pre / 'model'}", "--set", "train.steps=2", "--set", "train.device=cpu",
                 "--set", "train.schedule.warmup=1", "--set", "data.average_last=1", "--set", "train.eval.every=2",
                 "--set", "data.bleu_sentences=0", "--set", "model.dropout=0.2"]) == 0
    assert "initialised from" in capsys.readouterr().out
    record = json.loads((out / "run_config.json").read_text())["model"]
    assert (record["d_model"], record["n_encoder_layers"], record["dropout"]) == (16, 1, 0.2)  # the init's shape, the run's dropout
    assert (out / "tokenizer.json").read_text() == (pre / "model" / "tokenizer.json").read_text()

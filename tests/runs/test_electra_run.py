"""attnkit train electra through the one run path: finetune takes its model, convert exports its discriminator to transformers."""

from __future__ import annotations

import json

import pytest
import torch

import attnkit
from attnkit.cli.main import main

TEXT = "".join(f"To be, or not to be, that is the question {i}:\nWhether 'tis nobler in the mind to suffer\n"
               f"The slings and arrows of outrageous fortune.\n\n" for i in range(30))
TINY = ["--set", "model.d_model=32", "--set", "model.n_heads=4", "--set", "model.d_ff=64", "--set", "model.n_layers=1",
        "--set", "model.d_embed=16", "--set", "train.steps=3", "--set", "train.batch_size=4", "--set", "train.eval.every=3",
        "--set", "train.schedule.warmup=1", "--set", "train.device=cpu", "--vocab-size", "120", "--max-seq-len", "24",
        "--set", "data.max_eval_pairs=8", "--set", "data.valid_fraction=0.1"]


def test_electra_trains_finetunes_and_exports(tmp_path, capsys):
    (tmp_path / "t.txt").write_text(TEXT)
    out = tmp_path / "run"
    assert main(["train", "electra", "--text", str(tmp_path / "t.txt"), "--out", str(out), "--no-progress", *TINY]) == 0
    final = json.loads((out / "eval.json").read_text())
    assert {"disc_loss", "disc_accuracy", "disc_auc", "replaced_fraction", "mlm_loss"} <= set(final)
    assert 0.0 <= final["disc_auc"] <= 1.0
    assert abs(final["loss"] - (final["mlm_loss"] + 50 * final["disc_loss"])) < 1e-6
    assert type(attnkit.load(out / "model")).__name__ == "ElectraPretraining"
    # fine-tuning takes the discriminator's encoder
    tsv = "sentence\tlabel\n" + "".join(f"to be or not {i}\t{i % 2}\n" for i in range(16))
    (tmp_path / "train.tsv").write_text(tsv)
    assert main(["finetune", "classify", "--model", str(out / "model"), "--train", str(tmp_path / "train.tsv"), "--dev",
                 str(tmp_path / "train.tsv"), "--out", str(tmp_path / "ft"), "--no-progress", "--set", "train.steps=2",
                 "--set", "train.device=cpu", "--set", "train.batch_size=8"]) == 0
    # the discriminator as a Hugging Face ElectraForPreTraining
    transformers = pytest.importorskip("transformers")
    assert main(["convert", "--to-hf", "--family", "electra", str(out / "discriminator"), str(tmp_path / "hf")]) == 0
    hf = transformers.ElectraForPreTraining.from_pretrained(tmp_path / "hf").eval()
    disc = attnkit.load(out / "discriminator").eval()
    ids = torch.randint(5, 120, (2, 10))
    with torch.no_grad():
        torch.testing.assert_close(disc(ids).logits, hf(ids).logits, atol=1e-5, rtol=1e-5)


def test_electra_refuses_a_pair_task_and_a_model(tmp_path, capsys):
    (tmp_path / "t.txt").write_text(TEXT)
    assert main(["train", "electra", "--text", str(tmp_path / "t.txt"), "--out", str(tmp_path / "a"), "--set", "data.pair_task=nsp"]) == 2
    assert "pair_task" in capsys.readouterr().err
    assert main(["train", "electra", "--text", str(tmp_path / "t.txt"), "--out", str(tmp_path / "b"), "--set", "data.model=x"]) == 2
    assert "--model" in capsys.readouterr().err

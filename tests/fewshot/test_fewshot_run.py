"""``attnkit finetune fewshot`` end to end on a tiny random masked LM: PET with two patterns and distillation,
P-tuning prompts, and the fine-tuning baseline; the files, the seeds' samples and the mean over seeds."""

from __future__ import annotations

import json
import statistics

import pytest

import attnkit
from attnkit.cli.main import main
from attnkit.data.glue import read_classification_tsv
from attnkit.models.bert_heads import BertClassifier
from attnkit.training import pet

FAST = ["--no-progress", "--set", "train.device=cpu", "--set", "train.steps=2", "--set", "train.eval.every=1",
        "--set", "train.batch_size=4", "--set", "train.log_every=1", "--set", "train.optim.lr=1e-3", "--max-len", "24",
        "--shots", "4", "--seeds", "2", "--verbalizer", "negative=terrible,positive=great"]


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_pet_with_distillation_end_to_end(tiny_mlm, tmp_path, capsys):
    out = tmp_path / "pet"
    code, stdout, err = run_cli(capsys, "finetune", "fewshot", "--model", tiny_mlm / "mlm", "--train", tiny_mlm / "train.tsv",
                                "--test", tiny_mlm / "test.tsv", "--patterns", "{a} it was [MASK] .", "[MASK] : {a}",
                                "--set", "data.unlabeled_limit=16", "--out", out, *FAST)
    assert code == 0, err
    final = json.loads((out / "eval.json").read_text())
    seeds = json.loads((out / "seeds.json").read_text())
    assert [s["seed"] for s in seeds] == [0, 1]
    pool = read_classification_tsv(tiny_mlm / "train.tsv")
    for s in seeds:  # each seed's sets are the protocol's draw for that seed
        assert (s["train_index"], s["dev_index"]) == pet.lmbff_sample(pool.labels, 4, s["seed"])
        assert s["accuracy"] == s["distilled_accuracy"]
        assert {"pattern0_accuracy", "pattern1_accuracy", "ensemble_accuracy"} <= set(s)
    assert seeds[0]["train_index"] != seeds[1]["train_index"]
    assert final["accuracy_mean"] == pytest.approx(statistics.fmean(s["accuracy"] for s in seeds))
    assert final["accuracy_std"] == pytest.approx(statistics.pstdev(s["accuracy"] for s in seeds))
    assert {"zero_shot_pattern0_accuracy", "zero_shot_pattern1_accuracy", "zero_shot_accuracy"} <= set(final)
    assert {"zero_shot_calibrated_pattern0_accuracy", "zero_shot_calibrated_pattern1_accuracy", "zero_shot_calibrated_accuracy"} <= set(final)
    assert isinstance(attnkit.load(out / "model"), BertClassifier)  # the first seed's distilled classifier
    for name in ("pattern0", "pattern1", "distilled"):
        assert (out / "seeds" / "1" / name / "model").is_dir()
    assert "test accuracy over 2 seeds" in stdout


@pytest.mark.parametrize("extra", [["--peft", "ptuning", "--set", "peft.n_virtual=3", "--set", "data.distill=false"],
                                   ["--method", "finetune"]])
def test_ptuning_and_the_finetuning_baseline(tiny_mlm, tmp_path, capsys, extra):
    out = tmp_path / "run"
    code, _, err = run_cli(capsys, "finetune", "fewshot", "--model", tiny_mlm / "mlm", "--train", tiny_mlm / "train.tsv",
                           "--test", tiny_mlm / "test.tsv", "--out", out, *FAST, *extra)
    assert code == 0, err
    final = json.loads((out / "eval.json").read_text())
    assert 0.0 <= final["accuracy_mean"] <= 1.0 and final["seeds"] == 2
    seeds = json.loads((out / "seeds.json").read_text())
    if "--peft" in extra:
        assert seeds[0]["accuracy"] == seeds[0]["ensemble_accuracy"]
        assert (out / "model" / "adapter_config.json").is_file()  # the prompt is saved as an adapter on the masked LM


def test_user_mistakes_are_one_line_errors(tiny_mlm, tmp_path, capsys):
    base = ["finetune", "fewshot", "--model", tiny_mlm / "mlm", "--train", tiny_mlm / "train.tsv", "--test", tiny_mlm / "test.tsv"]
    code, _, err = run_cli(capsys, *base, "--verbalizer", "negative=awful,positive=great", "--out", tmp_path / "a", *FAST[:3])
    assert code == 2 and "one token per label" in err
    code, _, err = run_cli(capsys, *base, "--out", tmp_path / "b")
    assert code == 2 and "--verbalizer" in err
    code, _, err = run_cli(capsys, *base[:-2], "--test", tiny_mlm / "test.tsv", "--shots", "40", "--verbalizer",
                           "negative=terrible,positive=great", "--out", tmp_path / "c", "--no-progress")
    assert code == 2 and "shots per class" in err

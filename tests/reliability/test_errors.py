"""Exceptions a user can cause end as one ``attnkit: error:`` line and exit 2; bad values are refused where they are read.

Each test names the case of ``known-failures.md`` it reproduces (or a cause of its own).
"""

from __future__ import annotations

import errno
import json
import math
from pathlib import Path

import pytest
import torch

from attnkit.cli.main import main, user_error
from attnkit.errors import CheckpointError, ConfigError, DivergedError
from tests.reliability.harness import assert_user_error, run_cli

TINY_REV = ("train reverse --no-progress --set data.n_train=16 --set data.n_valid=4 --set model.d_model=16 --set model.n_heads=2 "
            "--set model.d_ff=32 --set model.n_encoder_layers=1 --set model.n_decoder_layers=1 --set train.batch_size=4 "
            "--set train.schedule.warmup=1 --set train.steps=2")
GEN = "generate --model lm/model --prompt To --max-new-tokens 3 --seed 0"


# -- the one mapping in the CLI -----------------------------------------------------------------------------------------

def test_user_error_maps_file_system_errors_and_leaves_bugs() -> None:
    """Every OSError a user causes has one line; an exception that is a bug has none (its traceback is shown)."""
    full = OSError(errno.ENOSPC, "No space left on device", "o/run/model.safetensors")
    assert user_error(full) == "no space left on device writing o/run/model.safetensors; free space or choose another --out"
    assert user_error(FileExistsError(errno.EEXIST, "File exists", "o/x")) == "File exists: o/x"
    assert user_error(OSError(errno.EROFS, "Read-only file system", "/ro/x")) == "Read-only file system: /ro/x"
    assert user_error(DivergedError("training loss became nan at step 3; lower train.optim.lr")).startswith("training loss")
    for bug in (KeyError("x"), IndexError("index out of range in self"), RuntimeError("boom"), FloatingPointError("x"),
                OSError(errno.EBADF, "Bad file descriptor")):
        assert user_error(bug) is None


def test_a_bug_still_shows_its_traceback(monkeypatch) -> None:
    from attnkit.cli import info

    def broken(path, *a, **k):  # noqa: ANN001, ANN002, ANN003
        raise IndexError("a bug")

    monkeypatch.setattr(info, "run", broken)
    with pytest.raises(IndexError):
        main(["info", "x"])


def test_closed_pipe_exits_quietly(work: Path) -> None:
    """P01: ``attnkit info lm/model | head -1`` ends without a traceback, status 141 as a Unix tool killed by SIGPIPE."""
    import subprocess
    import sys

    from tests.reliability.harness import REPO

    cmd = f"{sys.executable} -m attnkit.cli.main info lm/model | head -c 1; echo \" rc=${{PIPESTATUS[0]}}\""
    proc = subprocess.run(["bash", "-c", cmd], cwd=work, capture_output=True, text=True, timeout=60,
                          env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(work)})
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr, proc.stderr
    assert proc.stdout.strip().endswith(("rc=141", "rc=0")), proc.stdout


# -- non-finite numbers ---------------------------------------------------------------------------------------------

def test_c08_non_finite_learning_rate_refused(work: Path) -> None:
    """C08: ``train.optim.lr=Infinity`` passed validation and failed at step 2."""
    assert_user_error(f"{TINY_REV} --set train.optim.lr=Infinity --out o", work, "train.optim.lr=inf", "finite")
    assert not (work / "o").exists()


def test_non_finite_floats_refused_by_configs_in_python() -> None:
    from attnkit.training.config import OptimConfig, TrainConfig

    for bad in (math.inf, -math.inf, math.nan):
        with pytest.raises(ConfigError, match=f"lr={bad}"):
            OptimConfig(lr=bad)
    with pytest.raises(ConfigError, match="eval.stop_at=nan"):
        TrainConfig.from_dict({"eval": {"every": 1, "stop_at": math.nan}}, prefix="")
    with pytest.raises(ConfigError, match="too large"):
        OptimConfig(lr=10**400)
    assert OptimConfig(lr=3).lr == 3.0 and isinstance(OptimConfig(lr=3).lr, float)


def test_a_field_may_allow_non_finite_values() -> None:
    from dataclasses import dataclass

    from attnkit.config import Config

    @dataclass(frozen=True, kw_only=True)
    class Bound(Config):
        nonfinite = ("upper",)
        upper: float = math.inf
        lower: float = 0.0

    assert Bound().upper == math.inf
    with pytest.raises(ConfigError, match="lower"):
        Bound(lower=-math.inf)


def test_k22_sampling_nan_refused(work: Path) -> None:
    """K22: ``generate --temperature nan`` reached torch.multinomial."""
    assert_user_error(f"{GEN} --temperature nan", work, "temperature=nan", "finite")


def test_sampling_config_refuses_nan_in_python() -> None:
    from attnkit.generation.sampling import SamplingConfig

    for bad in ({"temperature": math.nan}, {"temperature": math.inf}, {"top_p": math.nan}, {"temperature": -1.0}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            SamplingConfig(**bad)


def _nan_flush(flush):  # noqa: ANN001, ANN202
    def patched(self, pending, result):  # noqa: ANN001, ANN202
        pending[:] = [torch.tensor(float("nan")) for _ in pending]
        return flush(self, pending, result)

    return patched


def test_c10_diverging_run_is_one_line(work: Path, capsys, monkeypatch) -> None:
    """C10: a loss that becomes nan mid-run ended in a FloatingPointError traceback; now one line naming the step and train.optim.lr."""
    from attnkit.training.loop import Trainer

    assert issubclass(DivergedError, FloatingPointError)  # the Python API's callers may still catch FloatingPointError
    monkeypatch.setattr(Trainer, "_flush", _nan_flush(Trainer._flush))
    code = main([*TINY_REV.split(), "--out", str(work / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and err == ["attnkit: error: training loss became nan at step 1; lower train.optim.lr"], err


# -- devices ---------------------------------------------------------------------------------------------------------

@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_c18_cuda_without_cuda(work: Path) -> None:
    assert_user_error(f"{TINY_REV} --set train.device=cuda --out o", work,
                      "train.device='cuda' but no CUDA device is available; use cpu or auto")
    assert not (work / "o").exists()


@pytest.mark.parametrize("device", ["cuda:abc", "bogus", "cpu:0", "cuda:"])
def test_c19_device_string_refused(work: Path, device: str) -> None:
    assert_user_error(f"{TINY_REV} --set train.device={device} --out o", work, f"device={device!r}", "cuda:N")


@pytest.mark.parametrize("device", ["bogus", "cuda:abc"] + ([] if torch.cuda.is_available() else ["cuda", "cuda:1"]))
def test_k24_k25_generate_device_refused(work: Path, device: str) -> None:
    """K24, K25: ``generate --device cuda`` on a CPU machine and ``--device bogus`` raised from torch."""
    assert_user_error(f"{GEN} --device {device}", work, f"device={device!r}")


def test_pick_device_in_python() -> None:
    from attnkit.training.loop import pick_device

    assert pick_device("cpu") == torch.device("cpu")
    assert pick_device("auto").type in ("cpu", "cuda", "mps")
    with pytest.raises(ConfigError, match="--device='gpu' is not a device"):
        pick_device("gpu", what="--device")
    if torch.cuda.is_available():
        n = torch.cuda.device_count()
        with pytest.raises(ConfigError, match=f"cuda:{n}"):
            pick_device(f"cuda:{n}")


# -- configuration checked before training ---------------------------------------------------------------------------

def test_c22_metric_checked_before_training(work: Path) -> None:
    """C22: a metric the task does not report failed at the first evaluation, after steps had run."""
    assert_user_error(f"{TINY_REV} --set train.eval.metric=bleu --set train.eval.every=1 --out o", work,
                      "train.eval.metric='bleu'", "loss, exact_match")
    assert not (work / "o").exists()


def test_c22_lm_metric(work: Path) -> None:
    assert_user_error("train lm --text text.txt --no-progress --set train.eval.metric=accuracy --out o", work,
                      "train.eval.metric='accuracy'", "loss")


def test_metric_names_of_each_job() -> None:
    """The declared names are what each task's evaluation returns (finetune by kind; unknown: no check)."""
    from attnkit.runs import job

    assert job("reverse").metric_names({}) == ("loss", "exact_match")
    assert job("lm").metric_names({}) == ("loss",)
    assert job("ner").metric_names({}) == ("loss", "precision", "recall", "f1")
    assert job("classify").metric_names({}) == ("loss", "accuracy")
    assert job("qa").metric_names({}) == ("exact_match", "f1")
    from attnkit.runs.mlm import MLMDataConfig

    assert job("mlm").metric_names({"data": MLMDataConfig()}) == ("loss", "mlm_loss", "mlm_accuracy")
    assert job("mlm").metric_names({"data": MLMDataConfig(pair_task="sop")})[-2:] == ("sop_loss", "sop_accuracy")
    from attnkit.objectives.mlm import MaskingConfig

    spanbert = {"data": MLMDataConfig(pair_task="sso"), "masking": MaskingConfig(span=True, span_boundary=True)}
    assert job("mlm").metric_names(spanbert) == ("loss", "mlm_loss", "mlm_accuracy", "sbo_loss", "sso_loss", "sso_accuracy")


def test_c11_unknown_preset(work: Path) -> None:
    assert_user_error(f"{TINY_REV} --preset bogus --out o", work, "preset 'bogus'", "transformer-tiny")


def test_c27_out_is_a_file(work: Path) -> None:
    (work / "afile").write_text("keep me")
    assert_user_error(f"{TINY_REV} --out afile", work, "afile")


# -- Hugging Face config.json ----------------------------------------------------------------------------------------

HF_BERT = {"model_type": "bert", "hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1, "intermediate_size": 16,
           "vocab_size": 30, "max_position_embeddings": 16}


@pytest.mark.parametrize("case,extra,say", [
    ("H05", {"architectures": [123]}, "architectures=[123]"),
    ("H05b", {"architectures": "BertModel"}, "architectures='BertModel'"),
    ("H16", {"architectures": ["BertForSequenceClassification"], "id2label": {"a": "x", "1": "y"}}, "id2label key 'a'"),
    ("H16b", {"architectures": ["BertForTokenClassification"], "id2label": {"0": "O", "5": "B"}}, "id2label keys are [0, 5]"),
    ("H16c", {"architectures": ["BertForSequenceClassification"], "id2label": ["x", "y"]}, "id2label=['x', 'y']"),
])
def test_hf_config_fields(work: Path, case: str, extra: dict, say: str) -> None:
    (work / "hf").mkdir()
    (work / "hf" / "config.json").write_text(json.dumps({**HF_BERT, **extra}))
    assert_user_error("info hf", work, "config.json", say)


def test_hf_labels_in_python() -> None:
    from attnkit.hub.bert import hf_labels

    assert hf_labels({"id2label": {"1": "POS", "0": "NEG"}}) == ("NEG", "POS")
    with pytest.raises(CheckpointError, match="'x'"):
        hf_labels({"id2label": {"x": "NEG"}})


# -- attention parameters --------------------------------------------------------------------------------------------

def test_m30_attention_param_type_in_config_json(work: Path) -> None:
    """M30: ``attention.params.scale = "abc"`` in config.json ended in a TypeError inside the kernel."""
    import shutil

    shutil.copytree(work / "rev" / "model", work / "m")
    path = work / "m" / "config.json"
    cfg = json.loads(path.read_text())
    cfg["attention"]["params"] = {"scale": "abc"}
    path.write_text(json.dumps(cfg))
    assert_user_error("translate --model m --beam 1 0123", work, "attention.params.scale='abc'", "number")


def test_attention_params_checked_at_config_time() -> None:
    from attnkit.attention import get
    from attnkit.models.transformer import TransformerConfig

    with pytest.raises(ConfigError, match=r"model.attention.params.scale='abc' must be a number"):
        TransformerConfig().with_overrides(["attention.params.scale=abc"], prefix="model.")
    with pytest.raises(ConfigError, match=r"params.scale=inf"):
        get("scaled_dot", scale=math.inf)
    with pytest.raises(ConfigError, match="takes no parameter 'bogus'"):
        get("scaled_dot", bogus=1)
    assert TransformerConfig().with_overrides(["attention.params.scale=2"]).attention.params == {"scale": 2}


def test_run_cli_ok_still_zero(work: Path) -> None:
    """The mapping changes nothing for a command that succeeds."""
    out = run_cli("info lm/model", work)
    assert out.code == 0 and out.stderr == "", out.stderr


# -- fine-tuning data --------------------------------------------------------------------------------------------------

from tests.cli.test_cli_finetune_qa import tiny_model  # noqa: E402,F401  (the random 2-layer BERT fixture, shared)


def test_d28_ner_on_all_o_data_refused(work: Path, tiny_model: Path) -> None:
    """D28: finetune ner on data tagged only ``O`` trained a one-label tagger (classify refuses one label)."""
    (work / "allO.conll").write_text("alice\tO\nbob\tO\n\ncarol\tO\n\n")
    assert_user_error(f"finetune ner --model {tiny_model} --no-progress --set train.steps=1 --set train.batch_size=2 "
                      "--train allO.conll --out o", work, "allO.conll", "only the tag ['O']", "at least two")
    assert not (work / "o").exists()


def test_d39_qa_truncation_reports_the_real_length(tmp_path: Path, tiny_model: Path, capsys) -> None:
    """D39: with --max-len 10 questions are cut to 6 tokens (max_len - 4); the report said the configured 64."""
    from tests.cli.test_cli_finetune_qa import synthetic_squad

    squad = synthetic_squad(tmp_path / "squad.json", n_articles=1, per_article=2)
    code = main(["finetune", "qa", "--model", str(tiny_model), "--no-progress", "--set", "train.steps=1", "--set", "train.batch_size=4",
                 "--train", str(squad), "--dev", str(squad), "--max-len", "10", "--out", str(tmp_path / "o")])
    out = capsys.readouterr().out
    assert code == 0
    assert "questions truncated to 6 tokens (max_len 10 - 4; data.max_question_len=64)" in out, out
    assert "truncated to 64" not in out


@pytest.mark.parametrize("kind", ["unigram", "wordpiece"])
def test_t05_tokenizer_train_refuses_non_utf8(work: Path, kind: str) -> None:
    """T05: ``tokenizer train`` turned invalid UTF-8 into U+FFFD entries while ``train lm`` refuses the same file."""
    (work / "latin1.txt").write_bytes("caf\u00e9 na\u00efve d\u00e9j\u00e0 vu\n".encode("latin-1") * 20)
    assert_user_error(f"tokenizer train --kind {kind} --vocab-size 60 --out t.json latin1.txt", work, "latin1.txt", "not UTF-8")
    assert not (work / "t.json").exists()
    assert_user_error("train lm --text latin1.txt --no-progress --out o", work, "latin1.txt", "not UTF-8")

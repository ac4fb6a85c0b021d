"""Bad inputs at the run path: overrides checked together, flags given again on resume (known-failures C39, C41, C62, C63)."""

from __future__ import annotations

import pytest

from tests.reliability.harness import assert_user_error, run_cli


@pytest.mark.parametrize("case, sets", [
    ("C39", ["train.steps=30", "train.schedule.warmup=5"]),
    ("C62", ["model.d_model=90", "model.n_heads=6"]),
    ("C63", ["model.n_heads=6", "model.d_model=90"]),
])
def test_valid_final_settings_in_any_order(work, case, sets):
    argv = ["train", "lm", "--text", "text.txt", "--out", f"o-{case}", "--show-config"]
    for s in sets:
        argv += ["--set", s]
    out = run_cli(argv, work)
    assert out.code == 0, out.stderr
    shown = dict(line.split(" = ", 1) for line in out.stdout.splitlines() if " = " in line)
    for s in sets:
        key, value = s.split("=")
        assert shown[key].split("  ")[0] == value


def test_c41_a_flag_that_changes_what_a_resumed_run_learns_is_refused(work):
    """train lm --resume --tokenizer bpe on a char run: refused naming data.tokenizer (was silently ignored)."""
    assert_user_error("train lm --resume --out lm --tokenizer bpe --vocab-size 500", work, "data.tokenizer", "start a new run")


def test_resume_of_another_task_is_refused(work):
    assert_user_error("train lm --resume --out rev", work, "'reverse' run")

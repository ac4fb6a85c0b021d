"""What attnkit does to files: it never deletes or overwrites what the user did not ask it to, writes atomically,
cleans its own leftovers, and gives what it writes the permissions the umask asks for."""

from __future__ import annotations

import json
import os
import shutil
import stat
from pathlib import Path

import pytest

from attnkit.cli.main import main
from attnkit.io import atomic_directory, atomic_write, atomic_write_text
from tests.reliability.harness import assert_user_error, snapshot

REV = "train reverse --no-progress --set data.n_train=64 --set data.n_valid=8 --set train.steps=2 --set train.eval.every=0"


# -- the one run path: a new run never takes over another run's directory ------------------------------------

@pytest.mark.parametrize("extra", ["", "--set train.keep_checkpoints=2 --set train.save_every=1", "--set train.seed=1"])
def test_new_run_in_a_run_directory_is_refused(work, extra):
    """C36, C37, C38: a new run in --out holding a run changes nothing and names --resume."""
    assert_user_error(f"{REV} {extra} --out rev", work, "rev holds another run", "--resume")


def test_new_run_where_model_is_a_user_directory_is_refused(work):
    """C60: OUT/model holding the user's files is not replaced."""
    (work / "o" / "model").mkdir(parents=True)
    (work / "o" / "model" / "keep.txt").write_text("important\n")
    assert_user_error(f"{REV} --out o", work, "holds another run")


# -- convert: DST is never a directory of the user's ----------------------------------------------------------

def _precious(work: Path) -> Path:
    d = work / "precious"
    (d / "sub").mkdir(parents=True)
    (d / "thesis.txt").write_text("my thesis\n")
    (d / "sub" / "data.csv").write_text("data\n")
    return d


@pytest.mark.parametrize("flags", ["", "--overwrite"])
def test_convert_refuses_a_non_empty_unrelated_destination(work, flags):
    """C58: user files in DST survive, with or without --overwrite."""
    _precious(work)
    assert_user_error(f"convert --to-hf {flags} lm/model precious", work, "precious", "not empty")


def test_convert_refuses_the_parent_of_its_source(work):
    """C61: ``convert --to-hf RUN/model RUN`` leaves the run as it was."""
    assert_user_error("convert --to-hf --overwrite lm/model lm", work, "contains SRC", "choose another DST")


@pytest.mark.parametrize("flags", [[], ["--overwrite"]])
@pytest.mark.parametrize("dst", ["lm", ".", "lm/model", "lm/model/"])
def test_convert_refuses_the_source_or_a_folder_above_it(work, capsys, dst, flags):
    _refused(["convert", "--to-hf", *flags, work / "lm/model", f"{work}/{dst}"], work, capsys, "choose another DST")


def _refused(argv: list[str], work: Path, capsys, *must_say: str) -> None:
    """In-process: exit 2, one error line saying ``must_say``, no file under ``work`` changed (the harness's checks, faster)."""
    before = snapshot(work)
    capsys.readouterr()
    assert main([str(a) for a in argv]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("attnkit: error: "), err
    assert all(text in err[0] for text in must_say), err
    assert snapshot(work) == before


def test_convert_refuses_a_file_destination_and_a_user_file_among_model_files(work, capsys):
    (work / "out.bin").write_bytes(b"x")
    _refused(["convert", "--to-hf", work / "lm/model", work / "out.bin"], work, capsys, "not a directory")
    assert main(["convert", "--to-hf", str(work / "lm/model"), str(work / "hf")]) == 0
    (work / "hf" / "notes.txt").write_text("mine\n")
    _refused(["convert", "--to-hf", "--overwrite", work / "lm/model", work / "hf"], work, capsys, "not empty")


def test_convert_replaces_its_own_kind_of_output_only_with_overwrite(work):
    """The output carries SRC's tokenizer.json; a DST of the same kind needs --overwrite (through the CLI harness)."""
    assert main(["convert", "--to-hf", str(work / "lm/model"), str(work / "hf")]) == 0
    assert sorted(p.name for p in (work / "hf").iterdir()) == ["config.json", "model.safetensors", "tokenizer.json"]
    assert (work / "hf/tokenizer.json").read_bytes() == (work / "lm/model/tokenizer.json").read_bytes()
    assert json.loads((work / "hf/config.json").read_text())["model_type"] == "gpt2"
    assert_user_error("convert --to-hf lm/model hf", work, "--overwrite")


def test_convert_overwrite_replaces_only_a_model_of_the_kind_written(work, capsys):
    assert main(["convert", "--to-hf", str(work / "lm/model"), str(work / "hf")]) == 0
    (work / "hf" / "model.safetensors").write_bytes(b"stale")
    assert main(["convert", "--to-hf", "--overwrite", str(work / "lm/model"), str(work / "hf")]) == 0
    assert (work / "hf" / "model.safetensors").read_bytes() != b"stale"
    assert not [p.name for p in work.iterdir() if p.name.startswith(".") or p.name.endswith(".old")]
    # an attnkit directory is not replaced by a Hugging Face one, nor the reverse
    assert main(["convert", "--to-attnkit", str(work / "hf"), str(work / "ak")]) == 0
    assert (work / "ak" / "tokenizer.json").is_file()
    _refused(["convert", "--to-hf", "--overwrite", work / "lm/model", work / "ak"], work, capsys, "not a Hugging Face model directory")
    _refused(["convert", "--to-attnkit", "--overwrite", work / "lm/model", work / "hf"], work, capsys, "not an attnkit model directory")
    (work / "empty").mkdir()
    assert main(["convert", "--to-hf", str(work / "lm/model"), str(work / "empty")]) == 0
    assert (work / "empty" / "model.safetensors").is_file()


# -- read-only commands never rename ---------------------------------------------------------------------------

def test_info_does_not_rename_a_dot_old_directory(work):
    """X04: ``info X`` with only X.old present reports it and leaves both names as they were."""
    shutil.copytree(work / "rev" / "model", work / "x.old")
    assert_user_error("info x", work, "x does not exist", "x.old", "rename it")
    assert (work / "x.old").is_dir() and not (work / "x").exists()


# -- checkpoints: leftovers, fsync, atomic trainer state -------------------------------------------------------

def test_orphaned_temporaries_are_removed_on_resume_and_user_files_kept(work, capsys):
    """F01: what a killed checkpoint writer leaves (attnkit's own temporary names only) goes when the run resumes."""
    ck = work / "rev" / "checkpoints"
    (ck / ".step-00000006.k2j_x9ab.tmp").mkdir()
    (ck / ".step-00000006.k2j_x9ab.tmp" / "model.safetensors").write_bytes(b"half")
    (ck / ".latest.ab12_cd.tmp").write_text("step-00000006")
    (ck / "step-00000004" / "trainer_state.pt.tmp").write_bytes(b"half")
    shutil.copytree(ck / "step-00000002", ck / "step-00000002.old")
    user = [ck / "notes.tmp", ck / "step-notes.tmp", ck / ".step-mine"]
    for p in user:
        p.write_text("mine\n")
    argv = ["train", "reverse", "--resume", "--out", str(work / "rev"), "--no-progress", "--set", "train.steps=6"]
    assert main(argv) == 0
    left = sorted(p.name for p in ck.iterdir())
    assert ".step-00000006.k2j_x9ab.tmp" not in left and ".latest.ab12_cd.tmp" not in left and "step-00000002.old" not in left
    assert not (ck / "step-00000004" / "trainer_state.pt.tmp").exists()
    assert all(p.read_text() == "mine\n" for p in user)
    assert (ck / "latest").read_text().strip() == "step-00000006"
    assert (ck / "step-00000006" / "trainer_state.pt").is_file()


def test_an_old_copy_without_its_replacement_is_put_back_by_the_writer(tmp_path):
    from attnkit.training.checkpoint import list_checkpoints, remove_orphans

    step = tmp_path / "checkpoints" / "step-00000002.old"
    step.mkdir(parents=True)
    (step / "trainer_state.pt").write_bytes(b"s")
    remove_orphans(tmp_path)
    assert [p.name for p in list_checkpoints(tmp_path)] == ["step-00000002"]


def test_checkpoint_files_and_directories_are_flushed_before_latest_moves(tmp_path, monkeypatch):
    """The step directory's files, the directory, and the directory holding ``latest`` are fsynced, in that order."""
    import attnkit.io as io
    from attnkit.models.gpt import GPT, GPTConfig
    from attnkit.training.checkpoint import save_checkpoint

    events: list[str] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        events.append("fsync:" + os.path.basename(os.readlink(f"/proc/self/fd/{fd}")))
        return real_fsync(fd)

    def replace(a, b):
        events.append("rename:" + os.path.basename(str(b)))
        return real_replace(a, b)

    monkeypatch.setattr(io.os, "fsync", fsync)
    monkeypatch.setattr(io.os, "replace", replace)
    model = GPT(GPTConfig(vocab_size=11, context=8, n_layers=1, n_heads=2, d_model=8))
    save_checkpoint(tmp_path, 3, model, {"step": 3})
    rename_step = events.index("rename:step-00000003")
    before = events[:rename_step]
    for name in ("model.safetensors", "config.json", "trainer_state.pt"):
        assert f"fsync:{name}" in before, events
    assert any(e.startswith("fsync:.step-00000003.") for e in before), events  # the directory under construction
    rename_latest = events.index("rename:latest")
    assert events[rename_step + 1] == "fsync:checkpoints"  # the step directory's name reached the disk
    assert any(e.startswith("fsync:.latest.") for e in events[rename_step:rename_latest])
    assert events[rename_latest + 1] == "fsync:checkpoints"


# -- atomic outputs ---------------------------------------------------------------------------------------------

def test_a_failed_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("old\n")

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write("partial")
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError):
        atomic_write(target, write)
    assert target.read_text() == "old\n" and os.listdir(tmp_path) == ["out.txt"]

    def fill(tmp: Path) -> None:
        (tmp / "a").write_text("partial")
        raise OSError(28, "No space left on device")

    (tmp_path / "d").mkdir()
    (tmp_path / "d" / "keep").write_text("k")
    with pytest.raises(OSError):
        atomic_directory(tmp_path / "d", fill)
    assert sorted(os.listdir(tmp_path)) == ["d", "out.txt"] and os.listdir(tmp_path / "d") == ["keep"]


def test_translate_output_is_written_atomically(work, monkeypatch, capsys):
    """F03: --output is complete when it appears, and an existing file is unchanged when writing fails."""
    import attnkit.cli.translate as translate

    out = work / "out.txt"
    out.write_text("previous\n")
    argv = ["translate", "--model", str(work / "rev/model"), "--beam", "1", "--device", "cpu", "--output", str(out), "--overwrite",
            "3 1 2", "5 5"]
    real = translate.atomic_write_text
    seen: list[Path] = []

    def failing(path, text):
        seen.append(Path(path))
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(translate, "atomic_write_text", failing)
    assert main(argv) == 2
    assert "cannot write --output" in capsys.readouterr().err
    assert seen == [out] and out.read_text() == "previous\n"
    monkeypatch.setattr(translate, "atomic_write_text", real)
    assert main(argv) == 0
    assert len(out.read_text().splitlines()) == 2
    assert sorted(p.name for p in work.iterdir() if p.name.startswith(".")) == []
    _refused(["translate", "--model", work / "rev/model", "--output", work / "rev", "1 2"], work, capsys, "is a directory")


# -- permissions follow the umask -------------------------------------------------------------------------------

@pytest.fixture
def umask_022():
    import attnkit.io as io

    old = os.umask(0o022)
    saved, io._UMASK = io._UMASK, None
    yield
    os.umask(old)
    io._UMASK = saved


def _modes(root: Path) -> set[tuple[str, int]]:
    out = {("dir", stat.S_IMODE(root.stat().st_mode))}
    for p in root.rglob("*"):
        out.add(("dir" if p.is_dir() else "file", stat.S_IMODE(p.stat().st_mode)))
    return out


def test_saved_model_and_checkpoints_follow_the_umask(tmp_path, umask_022):
    """C28e: under umask 022 a saved model directory is 0755 and its files 0644 (so another account can read them)."""
    from attnkit.models.gpt import GPT, GPTConfig
    from attnkit.training.checkpoint import save_checkpoint

    model = GPT(GPTConfig(vocab_size=11, context=8, n_layers=1, n_heads=2, d_model=8))
    model.save_pretrained(tmp_path / "model")
    assert _modes(tmp_path / "model") == {("dir", 0o755), ("file", 0o644)}
    save_checkpoint(tmp_path / "run", 1, model, {"step": 1})
    assert _modes(tmp_path / "run" / "checkpoints") == {("dir", 0o755), ("file", 0o644)}
    atomic_write_text(tmp_path / "t.txt", "x")
    assert stat.S_IMODE((tmp_path / "t.txt").stat().st_mode) == 0o644


def test_convert_output_follows_the_umask(work, umask_022):
    assert main(["convert", "--to-hf", str(work / "lm/model"), str(work / "hf")]) == 0
    assert _modes(work / "hf") == {("dir", 0o755), ("file", 0o644)}
    os.umask(0o077)
    import attnkit.io as io

    io._UMASK = None
    assert main(["convert", "--to-attnkit", str(work / "hf"), str(work / "ak")]) == 0
    assert _modes(work / "ak") == {("dir", 0o700), ("file", 0o600)}


def test_convert_failing_to_write_keeps_the_old_destination(work, capsys, monkeypatch):
    """F04: a write that fails (a full disk) is one error line; an existing DST and its neighbours are unchanged."""
    import attnkit.io as io

    assert main(["convert", "--to-hf", str(work / "lm/model"), str(work / "hf")]) == 0
    real = io.os.fsync

    def full(fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.os, "fsync", full)
    _refused(["convert", "--to-hf", "--overwrite", work / "lm/model", work / "hf"], work, capsys, "cannot write", "No space left")
    monkeypatch.setattr(io.os, "fsync", real)
    assert sorted(p.name for p in work.iterdir()) == ["hf", "lm", "rev", "text.txt"]

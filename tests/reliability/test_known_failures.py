"""Rows of the known-failures list not covered elsewhere in this folder, and the Python API's id checks.

Every test runs the CLI in-process (``main``), captures its output and hashes the files
before and after, as :func:`tests.reliability.harness.assert_user_error` does in a subprocess.
"""

from __future__ import annotations

import errno
import io
from pathlib import Path

import pytest
import torch
from torch import nn

from attnkit.cli.main import main
from attnkit.errors import CheckpointError
from tests.reliability.harness import snapshot

TINY_REV = ["train", "reverse", "--no-progress", "--set", "data.n_train=16", "--set", "data.n_valid=4", "--set", "model.d_model=16",
            "--set", "model.n_heads=2", "--set", "model.d_ff=32", "--set", "model.n_encoder_layers=1", "--set", "model.n_decoder_layers=1",
            "--set", "train.batch_size=4", "--set", "train.schedule.warmup=1", "--set", "train.steps=3", "--set", "train.save_every=1",
            "--set", "train.eval.every=0", "--set", "train.device=cpu"]


def _one_error_line(capsys, *must_say: str) -> str:
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 1 and err[0].startswith("attnkit: error: "), err
    for text in must_say:
        assert text in err[0], f"{text!r} not in {err[0]!r}"
    return err[0]


# -- F01: a full disk while a checkpoint is written -------------------------------------------------------------

def _fail_on_call(n: int, exc: BaseException, real):  # noqa: ANN001, ANN202
    calls = {"n": 0}

    def writer(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
        calls["n"] += 1
        if calls["n"] == n:
            raise exc
        return real(*args, **kwargs)

    return writer


@pytest.mark.parametrize("where", ["torch.save", "safetensors"])
def test_f01_full_disk_during_a_checkpoint_write(work: Path, capsys, monkeypatch, where: str) -> None:
    """F01: the second checkpoint's write fails as a full disk does (torch's zip writer: RuntimeError "unexpected pos";
    safetensors: ENOSPC): one error line naming the step and free space, no temporary left, ``latest`` on step 1."""
    import attnkit.models.base as base
    import attnkit.training.checkpoint as checkpoint

    if where == "torch.save":
        failure = RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 345408 vs 345296")
        monkeypatch.setattr(checkpoint.torch, "save", _fail_on_call(2, failure, torch.save))
    else:
        failure = OSError(errno.ENOSPC, "No space left on device")
        monkeypatch.setattr(base, "save_file", _fail_on_call(2, failure, base.save_file))
    before = snapshot(work)
    capsys.readouterr()
    assert main([*TINY_REV, "--out", str(work / "o")]) == 2
    line = _one_error_line(capsys, "writing checkpoint step-00000002 under", "failed:", "free space")
    assert ("unexpected pos" if where == "torch.save" else "No space left") in line
    ck = work / "o" / "checkpoints"
    assert sorted(p.name for p in ck.iterdir()) == ["latest", "step-00000001"]
    assert (ck / "latest").read_text().strip() == "step-00000001"
    assert torch.load(ck / "step-00000001" / "trainer_state.pt", weights_only=True)
    after = snapshot(work)
    assert {k: v for k, v in after.items() if not k.startswith("o/")} == before


def test_f01_checkpoint_write_failure_in_python(tmp_path: Path, monkeypatch) -> None:
    """F01 through the API: ``save_checkpoint`` raises CheckpointError (one line) and leaves no temporary directory."""
    import attnkit.training.checkpoint as checkpoint
    from attnkit.models.gpt import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=11, context=8, d_model=8, n_heads=2, n_layers=1))
    monkeypatch.setattr(checkpoint.torch, "save", _fail_on_call(1, OSError(errno.ENOSPC, "No space left on device"), torch.save))
    with pytest.raises(CheckpointError, match=r"^writing checkpoint step-00000007 under .* failed: .*No space left.*free space") as e:
        checkpoint.save_checkpoint(tmp_path, 7, model, {"step": 7})
    assert "\n" not in str(e.value)
    assert list((tmp_path / "checkpoints").iterdir()) == []
    monkeypatch.undo()
    checkpoint.save_checkpoint(tmp_path, 7, model, {"step": 7})
    assert checkpoint.load_trainer_state(checkpoint.latest_checkpoint(tmp_path)) == {"step": 7}


def test_a_bug_in_the_trainer_state_is_not_reported_as_a_full_disk(tmp_path: Path) -> None:
    """Only the write is translated: a state torch cannot pickle is a TypeError/pickling error, not a CheckpointError."""
    import attnkit.training.checkpoint as checkpoint
    from attnkit.models.gpt import GPT, GPTConfig

    model = GPT(GPTConfig(vocab_size=11, context=8, d_model=8, n_heads=2, n_layers=1))
    with pytest.raises(Exception) as e:
        checkpoint.save_checkpoint(tmp_path, 1, model, {"f": lambda: 0})
    assert not isinstance(e.value, CheckpointError)


# -- P02: the reader of a streamed generation goes away ---------------------------------------------------------

class _ClosedAfter(io.StringIO):
    """A stdout whose reader leaves after ``n`` characters (``| head -c n``); it has no file descriptor."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.n = n

    def write(self, s: str) -> int:
        if self.tell() + len(s) > self.n:
            raise BrokenPipeError(errno.EPIPE, "Broken pipe")
        return super().write(s)

    def fileno(self) -> int:
        raise io.UnsupportedOperation("fileno")


def test_p02_generate_into_a_closed_pipe(work: Path, capsys, monkeypatch) -> None:
    """P02: ``attnkit generate ... | head -c 5`` stops quietly with status 141 (128 + SIGPIPE), no traceback, no file changed."""
    before = snapshot(work)
    capsys.readouterr()
    out = _ClosedAfter(5)
    monkeypatch.setattr("sys.stdout", out)
    code = main(["generate", "--model", str(work / "lm/model"), "--prompt", "To", "--max-new-tokens", "20", "--seed", "0",
                 "--device", "cpu"])
    assert code == 141
    assert len(out.getvalue()) <= 5
    assert capsys.readouterr().err == ""
    assert snapshot(work) == before


# -- the Python API: ids outside the vocabulary ------------------------------------------------------------------

def _gpt() -> nn.Module:
    from attnkit.models.gpt import GPT, GPTConfig

    return GPT(GPTConfig(vocab_size=11, context=8, d_model=8, n_heads=2, n_layers=1))


def _bert() -> nn.Module:
    from attnkit.models.bert import BertConfig, BertModel

    return BertModel(BertConfig(vocab_size=11, d_model=8, n_heads=2, n_layers=1, d_ff=16, max_positions=8, pad_id=0))


def _classifier() -> nn.Module:
    from attnkit.models.encoder_classifier import EncoderClassifier, EncoderClassifierConfig

    return EncoderClassifier(EncoderClassifierConfig(vocab_size=11, d_model=8, n_heads=2, n_layers=1, d_ff=16, max_len=8,
                                                     num_labels=2))


def _transformer() -> nn.Module:
    from attnkit.models.transformer import Transformer, TransformerConfig

    return Transformer(TransformerConfig(src_vocab_size=11, tgt_vocab_size=11, d_model=8, n_heads=2, d_ff=16, n_encoder_layers=1,
                                         n_decoder_layers=1, max_len=8))


def _call(kind: str, model: nn.Module, ids: torch.Tensor, *, segments: torch.Tensor | None = None, tgt: torch.Tensor | None = None):  # noqa: ANN202
    if kind == "transformer":
        return model(ids, tgt if tgt is not None else torch.ones_like(ids))
    if kind == "bert":
        return model(ids, segment_ids=segments)
    return model(ids)


BUILD = {"gpt": _gpt, "bert": _bert, "classifier": _classifier, "transformer": _transformer}
ARG = {"gpt": "input_ids", "bert": "input_ids", "classifier": "input_ids", "transformer": "src"}


@pytest.mark.parametrize("training", [False, True], ids=["eval", "train"])
@pytest.mark.parametrize("bad", [11, -1, 10**6])
@pytest.mark.parametrize("kind", list(BUILD))
def test_api_token_ids_outside_the_vocabulary(kind: str, bad: int, training: bool) -> None:
    """API: an id outside [0, vocab) is a ValueError naming the argument and the vocabulary size, not nn.Embedding's IndexError,
    in eval and in training mode; the largest valid id is still accepted."""
    torch.manual_seed(0)
    model = BUILD[kind]().train(training)
    ids = torch.tensor([[1, 2, bad, 3]])
    with pytest.raises(ValueError, match=rf"^{ARG[kind]} holds id {bad}, outside the vocabulary of 11") as e:
        _call(kind, model, ids)
    assert not isinstance(e.value, IndexError)
    model.eval()
    ok = torch.tensor([[1, 2, 10, 3]])
    with torch.no_grad():
        _call(kind, model, ok)


def test_api_target_ids_outside_the_vocabulary() -> None:
    model = _transformer().eval()
    with pytest.raises(ValueError, match=r"^tgt holds id 12, outside the vocabulary of 11"):
        model(torch.tensor([[1, 2]]), torch.tensor([[1, 12]]))


def test_api_segment_ids_outside_the_type_vocabulary() -> None:
    model = _bert().eval()
    n = model.config.type_vocab_size
    with pytest.raises(ValueError, match=rf"^segment_ids holds id {n}, outside the vocabulary of {n}"):
        model(torch.tensor([[1, 2, 3]]), segment_ids=torch.tensor([[0, 0, n]]))
    model(torch.tensor([[1, 2, 3]]), segment_ids=torch.tensor([[0, 0, n - 1]]))


def test_check_ids_matches_nn_embedding_bounds() -> None:
    """The check refuses exactly the ids that nn.Embedding refuses (the reference)."""
    from attnkit.layers.positional import check_ids

    table = nn.Embedding(5, 2)
    for value in (-2, -1, 0, 4, 5, 6):
        ids = torch.tensor([0, value])
        try:
            table(ids)
            reference_ok = True
        except IndexError:
            reference_ok = False
        try:
            check_ids(ids, 5, "input_ids")
            ours_ok = True
        except ValueError:
            ours_ok = False
        assert ours_ok == reference_ok, value
    check_ids(torch.empty(0, dtype=torch.long), 5, "input_ids")  # nothing to look up: nothing to refuse

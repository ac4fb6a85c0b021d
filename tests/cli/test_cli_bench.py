"""``attnkit bench attention``: a table row per kernel and length; user mistakes are one-line errors."""

from __future__ import annotations

import pytest

from attnkit.cli.main import main


def test_bench_attention_prints_every_kernel(capsys) -> None:
    code = main(["bench", "attention", "--lengths", "48", "64", "--device", "cpu", "--heads", "2", "--head-dim", "16",
                 "--iters", "1", "--kernels", "dense", "sliding_window", "linear", "routing"])
    out = capsys.readouterr().out
    assert code == 0
    rows = [line.split() for line in out.splitlines()[2:]]
    assert [(r[0], r[1]) for r in rows] == [(k, t) for t in ("48", "64") for k in ("dense", "sliding_window", "linear", "routing")]
    assert all(r[-1].endswith("x") for r in rows)  # speed against dense


def test_bench_attention_cuda_graphs_options(capsys, monkeypatch) -> None:
    """``--cuda-graphs`` builds bigbird (64 x 64 tiles) and linear with ``cuda_graphs=True``; on the CPU they run as before."""
    import attnkit.attention.benchmark as B

    built = []
    real = B.build
    monkeypatch.setattr(B, "build", lambda kind, **kw: built.append((kind, kw["params"])) or real(kind, **kw))
    code = main(["bench", "attention", "--lengths", "128", "--device", "cpu", "--heads", "1", "--head-dim", "16", "--iters", "1",
                 "--kernels", "bigbird", "linear", "sliding_window", "--cuda-graphs"])
    assert code == 0 and len(capsys.readouterr().out.splitlines()) == 5
    params = dict(built)
    assert params["bigbird"]["cuda_graphs"] and params["bigbird"]["flex_tiles"] == (64, 64)
    assert params["linear"]["cuda_graphs"] and "cuda_graphs" not in params["sliding_window"]


def test_bench_attention_causal_skips_bidirectional_only_kernels(capsys) -> None:
    code = main(["bench", "attention", "--lengths", "32", "--device", "cpu", "--heads", "1", "--head-dim", "8", "--iters", "1",
                 "--kernels", "dense", "bigbird", "strided", "--causal", "--forward-only"])
    out = capsys.readouterr().out
    assert code == 0 and "bigbird" not in out and "strided" in out


@pytest.mark.parametrize("argv,message", [
    (["--kernels", "nope"], "unknown kernel 'nope'"),
    (["--lengths", "0"], "--lengths must be positive"),
    (["--iters", "0"], "--iters must be positive"),
])
def test_bench_attention_errors_are_one_line(capsys, argv: list[str], message: str) -> None:
    code = main(["bench", "attention", "--device", "cpu", *argv])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1

"""benchmarks/long_context.py: the long-document variants train alike, and the window statistics count chunks as the model cuts them."""

from __future__ import annotations

import random

import pytest


@pytest.fixture(scope="module")
def bench(load_benchmark):
    return load_benchmark("long_context")


@pytest.mark.parametrize("quick", [False, True])
def test_every_variant_trains_the_same_steps_on_the_same_examples(bench, quick):
    from attnkit import recipes, runs
    from attnkit.runs.path import resolve_configs

    recipe = recipes.get(bench.CHUNK_RECIPE)
    job = runs.job(recipe.task)
    steps, batch = 7, recipe.configs()["train"].batch_size
    seen = {}
    for mode in bench.LONG_MODES:
        files = {"train": "/docs/train.tsv", "dev": "/docs/dev.tsv"}
        c = resolve_configs(job, recipe=recipe, assignments=bench.chunk_assignments(mode, steps, batch, files), quick=quick,
                            root="/data")
        t, d = c["train"], c["data"]
        assert d.long == mode and (d.train, d.dev) == ("/docs/train.tsv", "/docs/dev.tsv")
        assert (t.steps, t.eval.every, d.steps_from_epochs, d.eval_per_epoch) == (steps, steps, False, False)
        seen[mode] = (t.to_dict(), {k: v for k, v in d.to_dict().items() if k != "long"})
    assert len({repr(v) for v in seen.values()}) == 1
    assert seen["memory"][1]["limit"] == steps * batch


def test_window_stats_count_the_chunks_the_model_reads(bench):
    from attnkit.models.chunked import chunk_ids

    rng = random.Random(0)
    lengths = [rng.randint(0, 60) for _ in range(200)] + [0, 14, 15, 28, 29, 600]
    chunk_len, max_chunks, positions = 14, 3, 512
    docs = [chunk_ids([101, *range(1000, 1000 + n), 102], 101, 102, chunk_len, max_chunks) for n in lengths]
    s = bench.window_stats(lengths, chunk_len, max_chunks, positions)
    assert s["documents"] == len(lengths)
    assert s["mean_chunks"] == round(sum(len(d) for d in docs) / len(docs), 3)
    assert s["longer_than_one_chunk"] == round(sum(sum(len(c) - 2 for c in d) > chunk_len for d in docs) / len(docs), 4)
    assert s["cut_past_max_chunks"] == sum(n > chunk_len * max_chunks for n in lengths)
    assert s["longer_than_encoder_positions"] == 1  # the 600-token document (602 with its specials)
    assert s["max_tokens"] == 600


@pytest.mark.parametrize("quick", [False, True])
def test_full_span_baseline_is_plain_attention_over_the_memory(bench, quick):
    """The span baseline (the span recipe with span_loss=0) against the same weights under scaled_dot attention."""
    import dataclasses

    import torch

    from attnkit import recipes, runs
    from attnkit.attention.adaptive_span import span_kernels
    from attnkit.models.gpt import GPT
    from attnkit.runs.path import resolve_configs

    c = resolve_configs(runs.job("lm"), recipe=recipes.get(bench.SPAN_RECIPE), assignments=bench.SPAN_FULL, quick=quick, root="/data")
    bench.check_full_span(c)
    if not quick:
        return  # the full-size model is checked by its settings only
    cfg = c["model"]
    torch.manual_seed(0)
    span = GPT(cfg).double().eval()
    plain_cfg = cfg.replace(attention=dataclasses.replace(cfg.attention, kind="scaled_dot", params={}))
    plain = GPT(plain_cfg).double().eval()
    missing, unexpected = plain.load_state_dict(span.state_dict(), strict=False)
    assert not missing and all("span_param" in k for k in unexpected) and unexpected
    seg, mem = c["data"].segment, c["data"].mem_len
    tokens = torch.randint(0, cfg.vocab_size, (2, 3 * seg))
    ms, mp = span.new_memories(mem), plain.new_memories(mem)
    for i in range(3):
        x = tokens[:, i * seg : (i + 1) * seg]
        torch.testing.assert_close(span(x, caches=ms).logits, plain(x, caches=mp).logits)
    span.train()
    for m in span.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
    span(tokens[:, :seg], caches=span.new_memories(mem)).logits.sum().backward()
    for k in span_kernels(span):
        assert k.span_param.grad is None or torch.count_nonzero(k.span_param.grad) == 0


def test_full_span_baseline_refuses_spans_that_restrict(bench):
    from attnkit import recipes, runs
    from attnkit.runs.path import resolve_configs

    recipe = recipes.get(bench.SPAN_RECIPE)
    for extra in ("model.attention.params.init=0.5", "model.attention.params.max_span=100"):
        c = resolve_configs(runs.job("lm"), recipe=recipe, assignments=[*bench.SPAN_FULL, extra], root="/data")
        with pytest.raises(SystemExit, match="full-span baseline"):
            bench.check_full_span(c)


def test_span_timing_warms_up_every_key_length(bench):
    """Each key length (a variant compiled FlexAttention compiles on its first call) is seen in the untimed
    warm-up steps before any timed step uses it, with a memory three segments long."""
    import torch

    from attnkit import recipes, runs
    from attnkit.attention.adaptive_span import span_kernels
    from attnkit.models.gpt import GPT
    from attnkit.runs.path import resolve_configs

    c = resolve_configs(runs.job("lm"), recipe=recipes.get(bench.SPAN_RECIPE), quick=True, root="/data",
                        assignments=["model.context=64", "data.mem_len=48"])
    seg, mem, steps = c["data"].segment, c["data"].mem_len, 4
    assert mem == 3 * seg
    torch.manual_seed(0)
    model = GPT(c["model"])
    keys: list[int] = []
    kernel = span_kernels(model)[0]
    kernel.register_forward_pre_hook(lambda m, args, kwargs: keys.append(args[1].shape[-2]), with_kwargs=True)
    valid = torch.randint(0, c["model"].vocab_size, (2 * (steps + 8) * seg + 1,))
    bench.step_tokens_per_s(model, valid, seg, mem, rows=2, steps=steps, train=False)
    warm, timed = keys[:-steps], keys[-steps:]
    assert sorted(set(keys)) == [seg, 2 * seg, 3 * seg, 4 * seg]
    assert set(timed) <= set(warm)


def test_train_only_trains_the_named_runs_of_part_one_as_the_xl_part_would(bench, tmp_path):
    """``--train-only``: the named runs of part 1 train into ``--runs`` with the assignments part 1 gives them (its
    later call reuses them), nothing is written to the results, and an unknown name lists the runs there are."""
    import argparse
    import json
    from pathlib import Path

    import torch

    data = Path(__file__).resolve().parents[2].parent / "shared" / "data"
    if not (data / "tinyshakespeare" / "input.txt").is_file():
        pytest.skip(f"tiny Shakespeare not found under {data}")
    args = argparse.Namespace(quick=True, data_root=str(data), xl_mem_factors=[2, 4])
    trainings = bench.xl_runs(args, torch.device("cpu"))  # quick recipe: segment 16, memory 16, context 32
    assert trainings == {"xl": [], "xl-no-memory": ["data.mem_len=0"],
                         "xl-memory-32": ["data.mem_len=32", "model.context=48"], "xl-memory-64": ["data.mem_len=64", "model.context=80"],
                         "plain-32": ["data.mem_len=0", "data.segment=32", "model.context=32"]}
    common = ["--data-root", str(data), "--quick", "--device", "cpu", "--runs", str(tmp_path / "runs"), "--out-dir", str(tmp_path / "r")]
    assert bench.main([*common, "--train-only", "plain-32"]) == 0
    saved = json.loads((tmp_path / "runs" / "quick" / "plain-32" / "run_config.json").read_text())
    assert (saved["data"]["mem_len"], saved["data"]["segment"], saved["model"]["context"]) == (0, 32, 32)
    assert (tmp_path / "runs" / "quick" / "plain-32" / "eval.json").is_file() and not (tmp_path / "r").exists()
    with pytest.raises(SystemExit, match="part 1 trains xl, xl-no-memory"):
        bench.main([*common, "--train-only", "plain-64"])

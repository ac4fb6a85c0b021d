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
        c = resolve_configs(job, recipe=recipe, assignments=bench.chunk_assignments(mode, steps, batch), quick=quick, root="/data")
        t, d = c["train"], c["data"]
        assert d.long == mode
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

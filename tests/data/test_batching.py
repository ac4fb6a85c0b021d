"""The shared pad function and samplers against plain reference code.

The samplers decide the data order of every run, so they are checked batch for batch against
the algorithms they replaced, written out plainly here: length-bucketed batches drawn from
``random.Random`` (fine-tuning, ListOps), from a ``torch.Generator`` (QA windows), and
token-budget batches (translation).
"""

from __future__ import annotations

import random

import pytest
import torch

from attnkit.data.batching import bucketed_batches, pad, permutation, sorted_batches, token_budget_batches


# -- references ---------------------------------------------------------------------------------
def ref_bucketed_python(lengths, batch_size, bucket_size, seed, epoch):
    rng = random.Random(seed * 1_000_003 + epoch)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    out = []
    for s in range(0, len(order), batch_size * bucket_size):
        part = sorted(order[s : s + batch_size * bucket_size], key=lambda i: lengths[i])
        out.extend(part[j : j + batch_size] for j in range(0, len(part), batch_size))
    rng.shuffle(out)
    return out


def ref_bucketed_torch(lengths, batch_size, bucket, seed, shuffle):
    g = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(lengths), generator=g).tolist() if shuffle else list(range(len(lengths)))
    groups = []
    for i in range(0, len(order), batch_size * bucket):
        part = sorted(order[i : i + batch_size * bucket], key=lambda j: lengths[j])
        groups += [part[k : k + batch_size] for k in range(0, len(part), batch_size)]
    if shuffle:
        groups = [groups[k] for k in torch.randperm(len(groups), generator=g).tolist()]
    return groups


def ref_token_budget(src_len, tgt_len, max_tokens, seed, epoch, shuffle):
    n = len(src_len)
    length = torch.maximum(torch.tensor(src_len), torch.tensor(tgt_len))
    if shuffle:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        tiebreak = torch.randperm(n, generator=g)
        order = tiebreak[torch.sort(length[tiebreak], stable=True).indices].tolist()
    else:
        order = torch.sort(length, stable=True).indices.tolist()
    batches, current, ls, lt = [], [], 0, 0
    for i in order:
        s, t = max(ls, src_len[i]), max(lt, tgt_len[i])
        if current and (len(current) + 1) * max(s, t) > max_tokens:
            batches.append(current)
            current, s, t = [], src_len[i], tgt_len[i]
        current.append(i)
        ls, lt = s, t
    if current:
        batches.append(current)
    if shuffle:
        batches = [batches[j] for j in torch.randperm(len(batches), generator=g).tolist()]
    return batches


def ref_pad(rows, pad_id, width, left):
    out = []
    for r in rows:
        fill = [pad_id] * (width - len(r))
        out.append(fill + list(r) if left else list(r) + fill)
    return out


def lengths_of(n, seed, lo=1, hi=60):
    rng = random.Random(seed)
    return [rng.randint(lo, hi) for _ in range(n)]


# -- samplers -----------------------------------------------------------------------------------
@pytest.mark.parametrize("n,batch_size,bucket_size", [(1000, 16, 20), (333, 7, 3), (5, 8, 50), (0, 4, 2)])
def test_bucketed_batches_equal_the_python_reference(n, batch_size, bucket_size):
    lengths = lengths_of(n, n)
    for seed, epoch in ((0, 0), (3, 1), (42, 7)):
        got = bucketed_batches(lengths, batch_size, bucket_size=bucket_size, seed=seed, epoch=epoch)
        assert got == ref_bucketed_python(lengths, batch_size, bucket_size, seed, epoch)
    assert sorted(i for b in got for i in b) == list(range(n))


@pytest.mark.parametrize("shuffle", [False, True])
def test_bucketed_batches_with_a_torch_generator_equal_the_torch_reference(shuffle):
    lengths = lengths_of(500, 1)
    for seed in (0, 5 * 100_003 + 2):
        rng = torch.Generator().manual_seed(seed)
        got = bucketed_batches(lengths, 8, bucket_size=10, shuffle=shuffle, rng=rng)
        assert got == ref_bucketed_torch(lengths, 8, 10, seed, shuffle)


def test_bucketed_batches_sort_within_buckets_and_depend_on_seed_and_epoch():
    lengths = lengths_of(1000, 2, 3, 120)
    batches = bucketed_batches(lengths, 16, bucket_size=20, seed=3, epoch=1)
    assert batches != bucketed_batches(lengths, 16, bucket_size=20, seed=3, epoch=2)
    assert batches != bucketed_batches(lengths, 16, bucket_size=20, seed=4, epoch=1)

    def padded(bs):
        return sum(len(b) * max(lengths[i] for i in b) for b in bs)

    assert padded(batches) < 1.1 * sum(lengths) < padded(bucketed_batches(lengths, 16, bucket_size=1, seed=3))
    fixed = bucketed_batches(lengths, 16, bucket_size=1000, shuffle=False)  # one bucket, no shuffle: sorted
    assert [lengths[i] for b in fixed for i in b] == sorted(lengths)


def test_sorted_batches_longest_first():
    lengths = [3, 9, 1, 9, 4]
    assert sorted_batches(lengths, 2) == [[1, 3], [4, 0], [2]]


@pytest.mark.parametrize("max_tokens", [20, 60, 300])
def test_token_budget_batches_equal_the_reference(max_tokens):
    src, tgt = lengths_of(400, 3, 1, 40), lengths_of(400, 4, 2, 41)
    longer = [max(s, t) for s, t in zip(src, tgt)]
    for seed, epoch in ((0, 0), (7, 2)):
        rng = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        assert token_budget_batches(longer, max_tokens, rng=rng) == ref_token_budget(src, tgt, max_tokens, seed, epoch, True)
    assert token_budget_batches(longer, max_tokens) == ref_token_budget(src, tgt, max_tokens, 0, 0, False)


def test_token_budget_holds_unless_one_example_exceeds_it():
    lengths = [3, 50, 2, 7, 7, 7, 1]
    plan = token_budget_batches(lengths, 20, rng=random.Random(0))
    assert [1] in plan and sorted(i for b in plan for i in b) == list(range(7))
    assert all(len(b) * max(lengths[i] for i in b) <= 20 for b in plan if b != [1])


def test_permutation_matches_shuffle_and_randperm():
    xs = list("abcdefghij")
    r1, r2 = random.Random(9), random.Random(9)
    r1.shuffle(xs)
    assert [list("abcdefghij")[i] for i in permutation(10, r2)] == xs
    assert permutation(10, torch.Generator().manual_seed(4)) == torch.randperm(10, generator=torch.Generator().manual_seed(4)).tolist()


# -- pad ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("as_tensors", [False, True])
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("multiple", [1, 8])
def test_pad_against_plain_lists(as_tensors, side, multiple):
    rows = [[5] * n for n in (3, 1, 11, 0)]
    rows = [[10 * r + i for i in range(len(x))] for r, x in enumerate(rows)]
    given = [torch.tensor(r, dtype=torch.uint8) for r in rows] if as_tensors else rows
    ids, mask = pad(given, 7, multiple=multiple, side=side, return_mask=True)
    width = 11 if multiple == 1 else 16
    assert ids.dtype == torch.long and mask.dtype == torch.bool
    assert ids.tolist() == ref_pad(rows, 7, width, side == "left")
    assert mask.tolist() == ref_pad([[True] * len(r) for r in rows], False, width, side == "left")
    assert torch.equal(pad(given, 7, multiple=multiple, side=side), ids)


def test_pad_of_empty_rows_and_no_rows():
    assert pad([[], []]).shape == (2, 0)
    assert pad([]).shape == (0, 0)
    with pytest.raises(ValueError, match="multiple=0"):
        pad([[1]], multiple=0)

"""Transformer-XL memory: segment recurrence against one forward over the joined text, relative positions
with memory against a plain loop, the stream batcher's continuity, generation with memory."""

from __future__ import annotations

import math

import pytest
import torch

from attnkit.data.segments import StreamSegments
from attnkit.errors import ConfigError
from attnkit.generation.xl import generate_with_memory
from attnkit.models.gpt import GPT, gpt_preset
from attnkit.models.transformer import AttentionConfig
from attnkit.positions.config import PositionConfig
from attnkit.positions.xl import XLRelative


def xl_gpt(seed: int = 0, **kw: object) -> GPT:
    torch.manual_seed(seed)
    cfg = gpt_preset("gpt-tiny", attention=AttentionConfig(position=PositionConfig(kind="xl_relative")), **kw)
    return GPT(cfg).double().eval()


def reference_logits(model: GPT, ids: torch.Tensor, first: int, mem_len: int) -> torch.Tensor:
    """One forward over the joined text: the queries after ``first`` see the last ``mem_len`` tokens before
    ``first`` and the joined text's causal past; the queries before ``first`` see their causal past."""
    t = ids.shape[1]
    i = torch.arange(t)[:, None]
    j = torch.arange(t)[None, :]
    allowed = (j <= i) & ((i < first) | (j >= first - mem_len))  # (T, T)
    x = model.tok_embed(ids)
    h, _ = model.decoder(x, allowed[None, None], causal=False)
    return model.lm_head(h)


@pytest.mark.parametrize("mem_len", [12, 7])
def test_memory_forward_equals_joined_forward(mem_len: int) -> None:
    model = xl_gpt()
    ids = torch.randint(0, 96, (2, 20))
    first = 12
    mems = model.new_memories(mem_len)
    model(ids[:, :first], caches=mems)
    assert mems[0].length == mem_len and not mems[0].memory.requires_grad
    got = model(ids[:, first:], caches=mems).logits  # (B, 8, V)
    want = reference_logits(model, ids, first, mem_len)[:, first:]
    torch.testing.assert_close(got, want, atol=1e-9, rtol=1e-9)
    # the memory moved on to the last mem_len inputs of the second segment
    assert mems[1].length == min(mem_len, 8 + mem_len)


@pytest.mark.parametrize("mem_len,segment", [(48, 16), (200, 128), (20, 8), (8, 8)])
def test_memory_keeps_the_last_mem_len_inputs_of_the_stream(mem_len: int, segment: int) -> None:
    """Segment after segment, the keys' inputs are [memory; segment] and the memory the last
    min(mem_len, inputs so far) positions of the stream, also while it is filling up."""
    from attnkit.attention.memory import XLMemory

    mem = XLMemory(mem_len)
    stream = torch.randn(1, 6 * segment, 4)
    for s in range(6):
        x = stream[:, s * segment : (s + 1) * segment]
        torch.testing.assert_close(mem.extend(x), stream[:, max(0, s * segment - mem_len) : (s + 1) * segment])
        mem.update(lambda q, k, v: None, x, lambda: (None, None))
        seen = (s + 1) * segment
        torch.testing.assert_close(mem.memory, stream[:, max(0, seen - mem_len) : seen])


def test_memory_stops_gradient() -> None:
    model = xl_gpt().float().train()
    ids = torch.randint(0, 96, (2, 16))
    mems = model.new_memories(8)
    model(ids[:, :8], caches=mems)
    model.zero_grad()
    model(ids[:, 8:], caches=mems).logits.sum().backward()
    # the memory holds no graph: W_k, W_v learn from it through the current projection only
    assert all(m.memory is not None and m.memory.grad_fn is None for m in mems)
    assert model.decoder.layers[0].self_attn.qkv_proj.weight.grad is not None


def test_relative_positions_with_memory_against_loop() -> None:
    torch.manual_seed(1)
    h, d, d_model, m, t = 2, 4, 8, 5, 3
    pos = XLRelative(d_model, h, d).double()
    q = torch.randn(1, h, t, d, dtype=torch.float64)
    k = torch.randn(1, h, m + t, d, dtype=torch.float64)
    got = pos.bias(q, k, torch.arange(m, m + t), causal=True, scale=0.5, q_offset=m)
    want = torch.zeros(1, h, t, m + t, dtype=torch.float64)
    w_r = pos.r_proj.weight.detach()  # (H d, d_model)
    for head in range(h):
        for i in range(t):
            for j in range(m + t):
                dist = (m + i) - j  # the query's position counts the memory before it
                r = torch.tensor([0.0] * d_model, dtype=torch.float64)
                for c in range(d_model // 2):
                    w = 10000.0 ** (-2 * c / d_model)
                    r[c], r[d_model // 2 + c] = math.sin(dist * w), math.cos(dist * w)
                p = (w_r @ r).view(h, d)[head]
                c_term = pos.u[head].double() @ k[0, head, j]
                bd = (q[0, head, i] + pos.v[head].double()) @ p
                want[0, head, i, j] = 0.5 * (c_term + bd)
    torch.testing.assert_close(got, want.detach(), atol=1e-10, rtol=1e-10)


def test_stream_segments_continue_row_by_row() -> None:
    stream = torch.arange(103)
    segs = list(StreamSegments(stream, batch_size=4, segment=5, start=2))
    n = (103 - 2) // 4
    assert len(segs) == (n - 1) // 5 and segs[0].first and not segs[1].first
    for a, b in zip(segs, segs[1:]):
        assert torch.equal(a.tokens[:, -1], b.tokens[:, 0])  # row i of step t + 1 continues row i of step t
    for i in range(4):
        row = torch.cat([segs[0].tokens[i]] + [s.tokens[i, 1:] for s in segs[1:]])
        assert torch.equal(row, torch.arange(2 + i * n, 2 + i * n + len(row)))  # a contiguous piece of the stream


def test_generation_with_memory_equals_full_recompute() -> None:
    model = xl_gpt()
    prompt = torch.randint(0, 96, (1, 9))
    got = generate_with_memory(model, prompt, mem_len=40, max_new_tokens=6, segment=4)
    ids = prompt
    for _ in range(6):  # greedy decoding, recomputing the whole text each step
        ids = torch.cat([ids, model(ids).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(got, ids[:, 9:])


def test_memory_refuses_absolute_positions() -> None:
    torch.manual_seed(0)
    with pytest.raises(ConfigError, match="relative positions"):
        GPT(gpt_preset("gpt-tiny")).new_memories(8)

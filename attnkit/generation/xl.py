"""Generation with Transformer-XL memory (Dai et al. 2019, section 3.2, "faster evaluation").

The prompt is read in segments that each extend the per-layer memory
(:mod:`attnkit.attention.memory`); every new token is then one more segment of length 1, which
attends to the ``mem_len`` positions before it and pushes the oldest out. A token therefore
costs O(mem_len) attention per layer however long the text grows, instead of recomputing a
window from scratch for every position, and the text may run far past the model's ``context``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from attnkit.errors import ConfigError


@torch.no_grad()
def generate_with_memory(
    model: torch.nn.Module,
    ids: Tensor,
    *,
    mem_len: int,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    seed: int | None = None,
    segment: int | None = None,
) -> Tensor:
    """Continue ``ids: (B, T)`` (rows of equal length) by ``max_new_tokens`` tokens.

    Args:
        model: a GPT whose positions follow the memory (``model.new_memories``).
        ids: the prompts.
        mem_len: memory positions per layer.
        max_new_tokens: tokens to add.
        temperature: 0 picks the most likely token; otherwise logits are divided by it and sampled.
        top_k: sample among the ``top_k`` most likely tokens only.
        seed: the sampling generator's seed.
        segment: prompt tokens read per call (default ``context - mem_len``).

    Returns:
        ``(B, max_new_tokens)`` the new tokens.

    Raises:
        ConfigError: a memory and segment that do not fit the model's context.
    """
    context = model.config.context  # type: ignore[union-attr]
    seg = segment or context - mem_len
    if seg <= 0 or mem_len + seg > context:
        raise ConfigError(f"mem_len={mem_len} plus a segment of {seg} must fit the model's context of {context}")
    if ids.shape[1] == 0:
        raise ConfigError("generate_with_memory needs a prompt of at least one token")
    was_training = model.training
    model.eval()
    memories = model.new_memories(mem_len)  # type: ignore[operator]
    g = torch.Generator(device=ids.device).manual_seed(seed) if seed is not None else None
    logits = None
    for s in range(0, ids.shape[1], seg):
        logits = model(ids[:, s : s + seg], caches=memories).logits[:, -1]  # (B, V)
    out = []
    for _ in range(max_new_tokens):
        assert logits is not None
        nxt = pick(logits.float(), temperature, top_k, g)  # (B,)
        out.append(nxt)
        logits = model(nxt[:, None], caches=memories).logits[:, -1]  # (B, V)
    model.train(was_training)
    return torch.stack(out, dim=1) if out else ids.new_zeros((ids.shape[0], 0))


def pick(logits: Tensor, temperature: float, top_k: int | None, generator: torch.Generator | None) -> Tensor:
    """The next token of each row of ``logits: (B, V)``: the argmax at temperature 0, else a sample."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    return torch.multinomial(logits.softmax(-1), 1, generator=generator)[:, 0]

"""Greedy and beam search against independent references: full-prefix argmax loops,
exhaustive enumeration of every output, and a rigged model whose best output is known."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest
import torch
from torch import Tensor

from attnkit import Transformer, TransformerConfig
from attnkit.generation import beam_search, gnmt_length_penalty, greedy_decode

PAD, BOS, EOS = 0, 1, 2


def tiny_model(seed: int, vocab: int = 12, eos_ramp: float = 0.6, **overrides: Any) -> Transformer:
    """A random eval-mode model whose EOS logit grows by ``eos_ramp`` per target position.

    Random models rarely stop by themselves; the ramp makes rows end at different steps,
    so that finishing, dropping rows and padding are exercised.
    """
    torch.manual_seed(seed)
    fields: dict[str, Any] = dict(
        src_vocab_size=vocab, tgt_vocab_size=vocab, d_model=32, n_heads=4, d_ff=64,
        n_encoder_layers=2, n_decoder_layers=2, dropout=0.0, max_len=24,
        share_embeddings=False, tie_output=False,
    )
    fields.update(overrides)
    model = Transformer(TransformerConfig(**fields)).eval()
    with torch.no_grad():
        model.lm_head.weight.mul_(3.0)  # sharper distributions than the initialisation gives
    if eos_ramp:
        decode = model.decode

        def ramped(tgt: Tensor, memory: Tensor, src_mask: Tensor | None, *, caches=None, **kw):
            offset = caches[0].self_attn.length if caches else 0
            logits, hidden, weights = decode(tgt, memory, src_mask, caches=caches, **kw)
            pos = torch.arange(offset, offset + tgt.shape[1], device=logits.device, dtype=logits.dtype)
            logits = logits.clone()
            logits[..., EOS] += eos_ramp * pos
            return logits, hidden, weights

        model.decode = ramped  # type: ignore[method-assign]
    return model


def padded_source(seed: int, batch: int = 5, length: int = 9, vocab: int = 12) -> Tensor:
    g = torch.Generator().manual_seed(seed)
    src = torch.randint(3, vocab, (batch, length), generator=g)
    src[1, 5:] = PAD
    src[min(3, batch - 1), 2:] = PAD
    return src


def assert_well_formed(out: Tensor, batch: int, max_len: int) -> None:
    assert out.shape[0] == batch and out.shape[1] <= max_len and out.dtype == torch.long
    assert not (out == EOS).any()
    is_pad = out == PAD
    # pad only as a right-hand suffix
    assert torch.equal(is_pad, is_pad.long().cummax(dim=1).values.bool())


def greedy_by_hand(model: Transformer, src: Tensor, max_len: int) -> list[list[int]]:
    """Argmax over the full-prefix teacher-forced logits, one row at a time."""
    outs = []
    for row in src:
        tgt_in = [BOS]
        out: list[int] = []
        for _ in range(max_len):
            logits = model(row[None], torch.tensor([tgt_in])).logits[0, -1].clone()
            logits[PAD] = float("-inf")
            tok = int(logits.argmax())
            if tok == EOS:
                break
            out.append(tok)
            tgt_in.append(tok)
        outs.append(out)
    return outs


def rows(out: Tensor) -> list[list[int]]:
    return [[t for t in r if t != PAD] for r in out.tolist()]


# -- greedy -----------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("norm_position,positional", [("post", "sinusoidal"), ("pre", "learned")])
def test_greedy_cache_matches_full_recompute(seed: int, norm_position: str, positional: str) -> None:
    model = tiny_model(seed, norm_position=norm_position, positional=positional)
    src = padded_source(seed)
    fast = greedy_decode(model, src, max_len=12)
    slow = greedy_decode(model, src, max_len=12, use_cache=False)
    assert torch.equal(fast, slow)
    assert_well_formed(fast, 5, 12)
    lengths = (fast != PAD).sum(1)
    assert len(set(lengths.tolist())) > 1  # rows finished at different steps


@pytest.mark.parametrize("seed", [0, 3])
def test_greedy_matches_argmax_loop(seed: int) -> None:
    model = tiny_model(seed)
    src = padded_source(seed)
    with torch.no_grad():
        expected = greedy_by_hand(model, src, 12)
    assert rows(greedy_decode(model, src, max_len=12)) == expected
    assert rows(greedy_decode(model, src, max_len=12, use_cache=False)) == expected


def test_greedy_without_decoder_layers() -> None:
    model = tiny_model(1, n_decoder_layers=0)
    src = padded_source(1)
    with torch.no_grad():
        expected = greedy_by_hand(model, src, 10)
    assert rows(greedy_decode(model, src, max_len=10)) == expected


# -- beam search ------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [0, 3])
def test_beam_size_one_is_greedy(seed: int) -> None:
    model = tiny_model(seed)
    src = padded_source(seed)
    greedy = greedy_decode(model, src, max_len=12)
    for use_cache in (True, False):
        assert torch.equal(beam_search(model, src, beam_size=1, length_penalty=0.0, max_len=12, use_cache=use_cache), greedy)


@pytest.mark.parametrize("seed", [0, 3])
@pytest.mark.parametrize("beam_size,alpha", [(4, 0.6), (3, 0.0), (5, 1.0)])
def test_beam_cache_matches_full_recompute(seed: int, beam_size: int, alpha: float) -> None:
    model = tiny_model(seed)
    src = padded_source(seed)
    kw = dict(beam_size=beam_size, length_penalty=alpha, max_len=12, return_scores=True)
    fast, fast_scores = beam_search(model, src, **kw)
    slow, slow_scores = beam_search(model, src, use_cache=False, **kw)
    assert torch.equal(fast, slow)
    torch.testing.assert_close(fast_scores, slow_scores, atol=1e-5, rtol=1e-5)
    assert_well_formed(fast, 5, 12)


def test_beam_batch_equals_one_example_at_a_time() -> None:
    model = tiny_model(0)
    src = padded_source(0)
    out, scores = beam_search(model, src, max_len=12, return_scores=True)
    for i in range(src.shape[0]):
        one, one_score = beam_search(model, src[i : i + 1], max_len=12, return_scores=True)
        assert rows(one) == rows(out[i : i + 1])
        torch.testing.assert_close(one_score, scores[i : i + 1], atol=1e-5, rtol=1e-5)


def score_by_hand(model: Transformer, src_row: Tensor, seqs: list[tuple[int, ...]], alpha: float) -> Tensor:
    """log P(Y | X) / lp(|Y|) of each complete output Y (ending in EOS, or cut at max_len)."""
    t = max(len(s) for s in seqs)
    tgt_in = torch.full((len(seqs), t), PAD)
    target = torch.full((len(seqs), t), PAD)
    for i, s in enumerate(seqs):
        tgt_in[i, : len(s)] = torch.tensor((BOS, *s[:-1]))
        target[i, : len(s)] = torch.tensor(s)
    with torch.no_grad():
        logits = model(src_row.expand(len(seqs), -1), tgt_in).logits.double()  # (N, T, V)
    logp = logits.log_softmax(-1).gather(-1, target.unsqueeze(-1)).squeeze(-1)  # (N, T)
    logp = logp.masked_fill(target == PAD, 0.0).sum(-1)  # (N,)
    lengths = torch.tensor([len(s) for s in seqs], dtype=torch.float64)
    return logp / ((5.0 + lengths) / 6.0) ** alpha


def all_outputs(vocab: int, max_len: int) -> list[tuple[int, ...]]:
    """Every output the search can produce: n < max_len free tokens then EOS, or max_len free tokens."""
    free = [t for t in range(vocab) if t not in (PAD, EOS)]
    seqs = [(*p, EOS) for n in range(max_len) for p in itertools.product(free, repeat=n)]
    return seqs + list(itertools.product(free, repeat=max_len))


def strip(seq: tuple[int, ...]) -> list[int]:
    return [t for t in seq if t != EOS]


@pytest.mark.parametrize("alpha", [0.0, 0.6, 2.0])
def test_beam_search_finds_exhaustive_optimum(alpha: float) -> None:
    vocab, max_len = 6, 4
    model = tiny_model(3, vocab=vocab, eos_ramp=0.3)
    src = padded_source(3, batch=3, length=6, vocab=vocab)
    seqs = all_outputs(vocab, max_len)  # 341 outputs
    # A beam wider than any step's candidate set makes beam search exhaustive (4^3 prefixes alive at most).
    out, scores = beam_search(model, src, beam_size=len(seqs), length_penalty=alpha, max_len=max_len, return_scores=True)
    for b in range(src.shape[0]):
        exact = score_by_hand(model, src[b], seqs, alpha)
        returned = rows(out[b : b + 1])[0]
        finished = len(returned) < max_len
        mine = tuple(returned) + ((EOS,) if finished else ())
        assert scores[b].item() == pytest.approx(exact.max().item(), abs=1e-4)
        assert score_by_hand(model, src[b], [mine], alpha).item() == pytest.approx(exact.max().item(), abs=1e-4)
        assert returned == strip(seqs[int(exact.argmax())])


@pytest.mark.parametrize("beam_size", [1, 2, 4])
@pytest.mark.parametrize("alpha", [0.0, 0.6])
def test_beam_score_is_the_rescored_output(beam_size: int, alpha: float) -> None:
    vocab, max_len = 6, 4
    model = tiny_model(0, vocab=vocab, eos_ramp=0.4)
    src = padded_source(0, batch=3, length=7, vocab=vocab)
    out, scores = beam_search(model, src, beam_size=beam_size, length_penalty=alpha, max_len=max_len, return_scores=True)
    best = [score_by_hand(model, src[b], all_outputs(vocab, max_len), alpha).max().item() for b in range(3)]
    for b, returned in enumerate(rows(out)):
        seq = tuple(returned) + ((EOS,) if len(returned) < max_len else ())
        rescored = score_by_hand(model, src[b], [seq], alpha).item()
        assert scores[b].item() == pytest.approx(rescored, abs=1e-4)
        assert rescored <= best[b] + 1e-6


# -- a rigged model: greedy's first choice leads nowhere ---------------------------------

A, B_TOK = 3, 4
# next-token probabilities after each generated prefix (default: EOS almost surely)
RIGGED = {
    (): {A: 0.5, B_TOK: 0.4, EOS: 0.1},
    (A,): {A: 0.4, B_TOK: 0.3, EOS: 0.3},
}
DEFAULT = {EOS: 0.9, A: 0.05, B_TOK: 0.05}


class PrefixCache:
    """Stands in for the layer caches: remembers each row's prefix, follows reorders."""

    def __init__(self) -> None:
        self.prefix: Tensor | None = None

    def reorder(self, index: Tensor, *, cross: bool = True) -> None:
        assert self.prefix is not None
        self.prefix = self.prefix.index_select(0, index)


def rig(model: Transformer, table: dict | None = None, default: dict | None = None) -> list[int]:
    """Replace ``model.decode`` by the fixed distributions above; returns a call counter."""
    table = RIGGED if table is None else table
    default = DEFAULT if default is None else default
    calls = [0]

    def decode(tgt: Tensor, memory: Tensor, src_mask: Tensor | None, *, caches=None, src_bias=None, need_weights=False):
        calls[0] += 1
        if caches:
            cache = caches[0]
            cache.prefix = tgt if cache.prefix is None else torch.cat([cache.prefix, tgt], 1)
            tgt = cache.prefix
        logits = torch.full((tgt.shape[0], tgt.shape[1], model.config.tgt_vocab_size), float("-inf"))
        for i, row in enumerate(tgt.tolist()):
            for tok, p in table.get(tuple(row[1:]), default).items():
                logits[i, :, tok] = math.log(p)
        return logits, None, []

    model.decode = decode  # type: ignore[method-assign]
    model.new_caches = lambda max_len: [PrefixCache()]  # type: ignore[method-assign]
    return calls


@pytest.mark.parametrize("use_cache", [True, False])
def test_beam_finds_what_greedy_misses(use_cache: bool) -> None:
    model = tiny_model(0, vocab=5, eos_ramp=0.0)
    calls = rig(model)
    src = torch.tensor([[3, 4, 3], [4, 4, 0]])
    greedy = greedy_decode(model, src, max_len=10, use_cache=use_cache)
    assert greedy.tolist() == [[A, A], [A, A]]  # p = 0.5 * 0.4 * 0.9 = 0.18
    calls[0] = 0
    out, scores = beam_search(model, src, beam_size=2, length_penalty=0.0, max_len=10, use_cache=use_cache, return_scores=True)
    assert out.tolist() == [[B_TOK], [B_TOK]]  # p = 0.4 * 0.9 = 0.36
    torch.testing.assert_close(scores, torch.full((2,), math.log(0.36)))
    assert calls[0] == 2  # stopped early: no alive hypothesis can beat 0.36 after step 2


def test_length_penalty_prefers_longer_output() -> None:
    # [A, A] (p 0.18, |Y| 3) vs [B] (p 0.36, |Y| 2): a strong length penalty flips the choice.
    model = tiny_model(0, vocab=5, eos_ramp=0.0)
    rig(model)
    src = torch.tensor([[3, 4, 3]])
    lp2, lp3 = gnmt_length_penalty(2, 6.0), gnmt_length_penalty(3, 6.0)
    assert math.log(0.18) / lp3 > math.log(0.36) / lp2
    out = beam_search(model, src, beam_size=2, length_penalty=6.0, max_len=3)
    assert out.tolist() == [[A, A]]


def test_early_stop_is_exact_under_length_penalty() -> None:
    # [] ends at once with p 0.6; [A] * 10 has p ~0.4 but, with alpha = 1, a score of
    # log(0.4) / lp(10) = -0.37 > log(0.6) / lp(1) = -0.51. Stopping as soon as the best alive
    # hypothesis cannot win at the *next* length (lp(2)) would miss it.
    model = tiny_model(0, vocab=5, eos_ramp=0.0)
    rig(model, table={(): {EOS: 0.6, A: 0.4}}, default={A: 0.999, EOS: 0.001})
    src = torch.tensor([[3, 4, 3]])
    assert greedy_decode(model, src, max_len=10).shape == (1, 0)
    out, score = beam_search(model, src, beam_size=2, length_penalty=1.0, max_len=10, return_scores=True)
    assert out.tolist() == [[A] * 10]
    assert score.item() == pytest.approx((math.log(0.4) + 9 * math.log(0.999)) / gnmt_length_penalty(10, 1.0), rel=1e-5)


def test_gnmt_length_penalty_formula() -> None:
    assert gnmt_length_penalty(1, 0.6) == 1.0
    assert gnmt_length_penalty(7, 0.0) == 1.0
    assert gnmt_length_penalty(7, 0.6) == pytest.approx((12 / 6) ** 0.6)


def test_default_max_len_is_source_plus_50_capped() -> None:
    never_stop = {A: 0.99, EOS: 0.01}
    model = tiny_model(0, vocab=5, eos_ramp=0.0, max_len=100)
    rig(model, table={}, default=never_stop)
    src = torch.tensor([[3, 4, 3, 4, 0]])
    assert greedy_decode(model, src).shape == (1, 55)
    model = tiny_model(0, vocab=5, eos_ramp=0.0, max_len=30)
    rig(model, table={}, default=never_stop)
    assert greedy_decode(model, src).shape == (1, 30)
    assert beam_search(model, src, beam_size=2, length_penalty=0.0).shape == (1, 30)


# -- dtypes, devices, errors ------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float64, torch.bfloat16])
def test_other_dtypes(dtype: torch.dtype) -> None:
    model = tiny_model(3).to(dtype)
    src = padded_source(3)
    for decode in (greedy_decode, beam_search):
        out = decode(model, src, max_len=8)
        assert_well_formed(out, 5, 8)
        if dtype == torch.float64:
            assert torch.equal(out, decode(model, src, max_len=8, use_cache=False))
    _, scores = beam_search(model, src, max_len=8, return_scores=True)
    assert scores.dtype == torch.float32 and torch.isfinite(scores).all()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu() -> None:
    model = tiny_model(3)
    src = padded_source(3)
    cpu_greedy = greedy_decode(model, src, max_len=12)
    cpu_beam, cpu_scores = beam_search(model, src, max_len=12, return_scores=True)
    model.cuda()
    gpu_greedy = greedy_decode(model, src.cuda(), max_len=12)
    gpu_beam, gpu_scores = beam_search(model, src.cuda(), max_len=12, return_scores=True)
    assert gpu_greedy.is_cuda and gpu_beam.is_cuda
    assert torch.equal(gpu_greedy.cpu(), cpu_greedy)
    assert torch.equal(gpu_beam.cpu(), cpu_beam)
    torch.testing.assert_close(gpu_scores.cpu(), cpu_scores, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("decode", [greedy_decode, beam_search])
def test_bad_inputs_raise(decode: Any) -> None:
    model = tiny_model(0)
    with pytest.raises(ValueError, match="empty batch"):
        decode(model, torch.zeros(0, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="max_len=24"):
        decode(model, torch.full((2, 25), 3))
    with pytest.raises(ValueError, match="integer"):
        decode(model, torch.ones(2, 3))
    with pytest.raises(ValueError, match="max_len"):
        decode(model, torch.full((2, 3), 3), max_len=0)
    with pytest.raises(ValueError, match="max_len"):
        decode(model, torch.full((2, 3), 3), max_len=25)


def test_bad_beam_size_raises() -> None:
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(tiny_model(0), torch.full((1, 3), 3), beam_size=0)


def test_training_mode_warns() -> None:
    model = tiny_model(0).train()
    with pytest.warns(UserWarning, match="eval"):
        greedy_decode(model, torch.full((1, 3), 3), max_len=2)


def test_decoder_steps_shared_bias_equals_mask_path() -> None:
    """Decoding steps take the source padding as one shared bias (built in ``start``); the
    log-probabilities equal those of the mask path, through beam reorders and dropped rows."""
    from attnkit.generation.seq2seq import DecoderSteps, start

    model = tiny_model(2, eos_ramp=0.0)
    src = padded_source(2)
    with torch.no_grad():
        steps = start(model, src, 2, 10, True)  # (5 examples x 2 copies) rows, bias path
        assert steps.src_bias is not None
        mask = model.source_mask(src)
        memory, _ = model.encode(src, mask)  # the encoder's mask path too
        ref = DecoderSteps(model, memory.repeat_interleave(2, 0), mask.repeat_interleave(2, 0), 10, True)
        swap = torch.tensor([1, 0, 3, 2, 5, 4, 7, 6, 9, 8])  # within each example: same sources
        keep = torch.tensor([2, 3, 6, 7])  # examples 1 and 3 (padded rows), new sources
        for rows_, new in [(None, False), (swap, False), (keep, True), (None, False)]:
            got, want = steps.log_probs(), ref.log_probs()
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
            tok = want.argmax(-1)
            if rows_ is not None:
                tok = tok.index_select(0, rows_)
            steps.advance(tok, rows_, new_sources=new)
            ref.advance(tok, rows_, new_sources=new)
        assert steps.src_mask is None and steps.src_bias.shape[0] == ref.src_mask.shape[0] == 4

"""The batch, the Hugging Face logits and the checks that the encoder-decoder interop tests (T5, BART, Marian, Pegasus) share."""

from __future__ import annotations

import os

import torch


def padded_batch(vocab: int, pad: int, start: int, low: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A right-padded source batch and decoder inputs (start token, then tokens, right-padded).

    Args:
        vocab: the vocabulary size.
        pad: the pad id.
        start: the decoder's start id.
        low: the smallest id drawn (the special ids lie below it, so none appears inside a sequence).

    Returns:
        ``(src (3, 20), tgt (3, 18))``; rows of different lengths, one of each unpadded.
    """
    g = torch.Generator().manual_seed(1)
    src = torch.randint(low, vocab, (3, 20), generator=g)  # (B, Ts)
    src[1, 14:] = pad
    src[2, 5:] = pad
    tgt = torch.randint(low, vocab, (3, 18), generator=g)  # (B, Tt)
    tgt[:, 0] = start
    tgt[2, 10:] = pad
    return src, tgt


def moved(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in eval mode with every weight moved off its initial value (unit norms, zero biases), seeded."""
    torch.manual_seed(3)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model.eval()


def hf_logits(model: torch.nn.Module, src: torch.Tensor, tgt: torch.Tensor, pad: int) -> torch.Tensor:
    """The logits ``(B, Tt, V)`` of a transformers encoder-decoder, the source's padding masked."""
    with torch.no_grad():
        return model(input_ids=src, attention_mask=(src != pad).long(), decoder_input_ids=tgt).logits


def assert_reloads_exactly(path: str | os.PathLike[str], model: torch.nn.Module) -> None:
    """``attnkit.load(path)`` recognises the exported directory and gives back ``model``'s config and state dict exactly."""
    import attnkit
    from attnkit.models.transformer import Transformer

    again = attnkit.load(path)
    assert isinstance(again, Transformer) and again.config == model.config
    for k, v in model.state_dict().items():
        assert torch.equal(v, again.state_dict()[k]), k


def assert_greedy_matches_generate(model: torch.nn.Module, hf: torch.nn.Module, src: torch.Tensor, pad: int, eos: int,
                                   steps: int = 6) -> None:
    """attnkit's greedy decoding of ``src`` gives the tokens of transformers' greedy ``generate`` up to its first EOS.

    attnkit never generates the pad id, so Hugging Face is told the same (``suppress_tokens``); its start token is dropped.
    """
    from attnkit.generation.seq2seq import greedy_decode

    ours = greedy_decode(model, src, max_len=steps)  # (B, <= steps): no start token, no EOS, pad after
    theirs = hf.generate(input_ids=src, attention_mask=(src != pad).long(), max_new_tokens=steps, do_sample=False,
                         num_beams=1, suppress_tokens=[pad])[:, 1:]  # (B, steps)
    assert ours.shape[1] > 0
    for row_ours, row_theirs in zip(ours.tolist(), theirs.tolist()):
        expected = row_theirs[: row_theirs.index(eos)] if eos in row_theirs else row_theirs
        assert [t for t in row_ours if t != pad] == expected

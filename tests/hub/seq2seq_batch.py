"""The batch and the Hugging Face logits that the encoder-decoder interop tests (T5, BART) compare on."""

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

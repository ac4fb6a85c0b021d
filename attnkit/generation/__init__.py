"""Decoding: greedy and beam search for the encoder-decoder Transformer; sampling for GPT.

>>> model.eval()
>>> out = greedy_decode(model, src)                      # (B, T_out), no BOS/EOS, pad-filled
>>> out, scores = beam_search(model, src, beam_size=4, length_penalty=0.6, return_scores=True)
"""

from attnkit.generation.beam import beam_search, gnmt_length_penalty
from attnkit.generation.one_row import FoldedLayerNorm, OneRowLinear, fold_layer_norms, use_one_row_linears
from attnkit.generation.sampling import (
    SamplingConfig, StaticKVCache, decode_greedy_token, decode_one_token, generate, prefill, static_caches,
)
from attnkit.generation.seq2seq import greedy_decode

__all__ = [
    "FoldedLayerNorm", "OneRowLinear", "SamplingConfig", "StaticKVCache", "beam_search", "decode_greedy_token", "decode_one_token",
    "fold_layer_norms", "generate",
    "gnmt_length_penalty", "greedy_decode", "prefill", "static_caches", "use_one_row_linears",
]

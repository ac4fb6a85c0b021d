"""From a model and a text to the viewer's attention groups.

The model runs once on the text (its ordinary fast path) while :mod:`attnkit.inspect` records
every layer's probabilities:

* a BERT-family model reads ``[CLS] text [SEP]`` or ``[CLS] text [SEP] pair [SEP]``;
* a GPT reads the text's tokens;
* the encoder-decoder reads the text as its source and ``pair`` as its target (teacher forced,
  after BOS); without ``pair`` the target is the model's own greedy translation.

With ``words=True`` the word pieces of each side are merged into words (:mod:`attnkit.inspect.words`).
A last group, ``rollout``, holds the attention rollout of the (encoder) self-attention up to each
layer (Abnar & Zuidema 2020; :mod:`attnkit.inspect.rollout`) as one head per layer.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from attnkit.errors import ConfigError, DataError
from attnkit.inspect import attentions, merge, rollout_by_layer, word_groups
from attnkit.viz.payload import Group


def _side(tokens: list[str], word_ids: list[int | None] | None, words: bool) -> tuple[list[str], list[int] | None]:
    if not words:
        return tokens, None
    merged, group = word_groups(tokens, word_ids)
    return merged, group


def groups_for_text(model: nn.Module, tokenizer: Any, text: str, pair: str | None = None, *, words: bool = False) -> list[Group]:
    """Run ``model`` on ``text`` (and ``pair``) and return its attention, one group per kind.

    Args:
        model: a BERT-family model (with ``tokenizer`` a WordPiece tokenizer), a GPT or an
            encoder-decoder Transformer (with a ``tokenizers.Tokenizer``).
        tokenizer: the model's tokenizer.
        text: the input text (the source, for the encoder-decoder).
        pair: a BERT sentence pair's second sentence, or the encoder-decoder's target.
        words: merge word pieces into words.

    Returns:
        The groups, each with its layers as ``(heads, Tq, Tk)`` probabilities.

    Raises:
        DataError: empty text or a text longer than the model accepts.
        ConfigError: ``pair`` for a model that reads one sequence.
    """
    from attnkit.models.gpt import GPT
    from attnkit.models.transformer import Transformer

    if not text.strip():
        raise DataError("--text is empty; give the text to look at")
    device = next(model.parameters()).device
    if isinstance(model, Transformer):
        return _seq2seq(model, tokenizer, text, pair, words, device)
    if isinstance(model, GPT):
        if pair is not None:
            raise ConfigError("--pair is for BERT-family sentence pairs and the encoder-decoder's target; a GPT reads one text")
        enc = tokenizer.encode(text)
        if not enc.ids:
            raise DataError("the text has no tokens")
        if len(enc.ids) > model.config.context:
            raise DataError(f"the text has {len(enc.ids)} tokens, more than the model's context of {model.config.context}")
        att = attentions(model, torch.tensor([enc.ids], device=device))
        return _with_rollout([_group("self", att["self"], enc.tokens, enc.word_ids, enc.tokens, enc.word_ids, words)],
                             att["self"], enc.tokens, enc.word_ids, words)
    inputs = tokenizer([text], [pair] if pair is not None else None)
    if inputs.truncated:
        raise DataError(f"the text is longer than the model's {tokenizer.max_len} positions; shorten it")
    tokens = [tokenizer.tokenizer.id_to_token(int(i)) for i in inputs.ids[0]]
    att = attentions(model, inputs.ids.to(device), attention_mask=inputs.attention_mask.to(device),
                     segment_ids=inputs.segment_ids.to(device))
    return _with_rollout([_group("self", att["self"], tokens, inputs.word_ids[0], tokens, inputs.word_ids[0], words)],
                         att["self"], tokens, inputs.word_ids[0], words)


def _group(name: str, layers: tuple, q_tokens: list[str], q_words: Any, k_tokens: list[str], k_words: Any, words: bool) -> Group:
    qt, qg = _side(list(q_tokens), q_words, words)
    kt, kg = _side(list(k_tokens), k_words, words)
    ws = [w[0].float().cpu() for w in layers]  # (H, Tq, Tk) of the one row
    if words:
        ws = [merge(w, qg, kg) for w in ws]
    return Group(name, ws, qt, kt)


def _with_rollout(groups: list[Group], layers: tuple, tokens: list[str], word_ids: Any, words: bool) -> list[Group]:
    """``groups`` and the rollout of one self-attention stack up to each layer, a one-head group."""
    flows = tuple(r[:, None] for r in rollout_by_layer(layers))  # (B, 1, T, T) per layer
    return groups + [_group("rollout", flows, tokens, word_ids, tokens, word_ids, words)]


def _seq2seq(model: nn.Module, tok: Any, text: str, pair: str | None, words: bool, device: torch.device) -> list[Group]:
    from attnkit.generation import greedy_decode

    c = model.config
    src_enc = tok.encode(text)
    if not src_enc.ids:
        raise DataError("the text has no tokens")
    if len(src_enc.ids) > c.max_len:
        raise DataError(f"the text has {len(src_enc.ids)} tokens, more than the model's {c.max_len}")
    src = torch.tensor([src_enc.ids], device=device)
    if pair is not None:
        tgt_enc = tok.encode(pair)
        tgt_ids, tgt_tokens, tgt_words = tgt_enc.ids, tgt_enc.tokens, tgt_enc.word_ids
    else:
        model.eval()
        with torch.no_grad():
            tgt_ids = [t for t in greedy_decode(model, src)[0].tolist() if t != c.pad_id]
        tgt_tokens = [tok.id_to_token(t) or str(t) for t in tgt_ids]
        tgt_words = None
    if len(tgt_ids) + 1 > c.max_len:
        raise DataError(f"the target has {len(tgt_ids)} tokens, more than the model's {c.max_len - 1}")
    bos = tok.id_to_token(c.bos_id) or "<s>"
    tgt_in = torch.tensor([[c.bos_id] + tgt_ids], device=device)
    dec_tokens, dec_words = [bos] + list(tgt_tokens), None if tgt_words is None else [None] + list(tgt_words)
    att = attentions(model, src, tgt_in)
    s_tok, s_words = src_enc.tokens, src_enc.word_ids
    groups = [
        _group("encoder", att["encoder"], s_tok, s_words, s_tok, s_words, words),
        _group("decoder", att["decoder"], dec_tokens, dec_words, dec_tokens, dec_words, words),
        _group("cross", att["cross"], dec_tokens, dec_words, s_tok, s_words, words),
    ]
    return _with_rollout(groups, att["encoder"], s_tok, s_words, words)

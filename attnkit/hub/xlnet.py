"""Hugging Face ``XLNetLMHeadModel`` -> :class:`attnkit.models.xlnet.XLNetLM` (weights and config).

XLNet keeps its attention projections as ``(d_model, n_heads, d_head)`` tensors used in einsums; here
they are ``nn.Linear`` layers: ``q``, ``k``, ``v``, ``r`` become ``W.reshape(d_model, -1).T`` and ``o``
``W.reshape(d_model, -1)``. Every source tensor must be used and every target filled.
"""

from __future__ import annotations

from typing import Any

import torch

from attnkit.errors import CheckpointError
from attnkit.models.xlnet import XLNetConfig, XLNetLM

LAYER = {  # attnkit name -> (Hugging Face name, transform)
    "attn.q.weight": ("rel_attn.q", "in"), "attn.k.weight": ("rel_attn.k", "in"), "attn.v.weight": ("rel_attn.v", "in"),
    "attn.r.weight": ("rel_attn.r", "in"), "attn.o.weight": ("rel_attn.o", "out"),
    "attn.content_bias": ("rel_attn.r_w_bias", None), "attn.position_bias": ("rel_attn.r_r_bias", None),
    "attn.segment_bias": ("rel_attn.r_s_bias", None), "attn.segment_embed": ("rel_attn.seg_embed", None),
    "attn.norm.weight": ("rel_attn.layer_norm.weight", None), "attn.norm.bias": ("rel_attn.layer_norm.bias", None),
    "w1.weight": ("ff.layer_1.weight", None), "w1.bias": ("ff.layer_1.bias", None),
    "w2.weight": ("ff.layer_2.weight", None), "w2.bias": ("ff.layer_2.bias", None),
    "ffn_norm.weight": ("ff.layer_norm.weight", None), "ffn_norm.bias": ("ff.layer_norm.bias", None),
}


def config_from_hf(hf: Any) -> XLNetConfig:
    """The attnkit config of a ``transformers.XLNetConfig`` (refusing what is not implemented)."""
    if getattr(hf, "attn_type", "bi") != "bi" or getattr(hf, "bi_data", False) or not getattr(hf, "untie_r", True):
        raise CheckpointError("only XLNet with attn_type='bi', bi_data=False and untie_r=True converts")
    return XLNetConfig(vocab_size=hf.vocab_size, d_model=hf.d_model, n_layers=hf.n_layer, n_heads=hf.n_head, d_ff=hf.d_inner,
                       activation=hf.ff_activation, dropout=hf.dropout, norm_eps=hf.layer_norm_eps, init_std=hf.initializer_range,
                       pad_id=hf.pad_token_id if hf.pad_token_id is not None else 5)


def xlnet_from_hf(hf_model: Any) -> XLNetLM:
    """An :class:`XLNetLM` holding the weights of a ``transformers.XLNetLMHeadModel``.

    Raises:
        CheckpointError: a source tensor is unused or a shape differs.
    """
    config = config_from_hf(hf_model.config)
    model = XLNetLM(config)
    src = dict(hf_model.state_dict())
    used: set[str] = set()
    d = config.d_model

    def take(name: str) -> torch.Tensor:
        if name not in src:
            raise CheckpointError(f"the XLNet checkpoint has no {name}")
        used.add(name)
        return src[name]

    target: dict[str, torch.Tensor] = {"embed.weight": take("transformer.word_embedding.weight"),
                                       "mask_emb": take("transformer.mask_emb"), "lm_head.bias": take("lm_loss.bias")}
    for i in range(config.n_layers):
        for ours, (theirs, how) in LAYER.items():
            w = take(f"transformer.layer.{i}.{theirs}")
            target[f"layers.{i}.{ours}"] = w.reshape(d, -1).T if how == "in" else w.reshape(d, -1) if how == "out" else w
    if "lm_loss.weight" in src:
        used.add("lm_loss.weight")  # tied to the word embeddings
    unused = sorted(set(src) - used)
    if unused:
        raise CheckpointError(f"the XLNet checkpoint has tensors this model does not use: {', '.join(unused[:5])}")
    own = model.state_dict()
    for k, v in target.items():
        if own[k].shape != v.shape:
            raise CheckpointError(f"{k}: shape {tuple(v.shape)} does not match the model's {tuple(own[k].shape)}")
    missing = sorted(set(own) - set(target) - {"lm_head.weight"})
    if missing:
        raise CheckpointError(f"no source for {', '.join(missing[:5])}")
    model.load_state_dict({**target, "lm_head.weight": target["embed.weight"]})
    return model

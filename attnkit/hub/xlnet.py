"""Hugging Face ``XLNetLMHeadModel`` <-> :class:`attnkit.models.xlnet.XLNetLM` (weights and config).

XLNet keeps its attention projections as ``(d_model, n_heads, d_head)`` tensors used in einsums; here
they are ``nn.Linear`` layers: ``q``, ``k``, ``v``, ``r`` become ``W.reshape(d_model, -1).T`` and ``o``
``W.reshape(d_model, -1)``. Every source tensor must be used and every target filled.
"""

from __future__ import annotations

from pathlib import Path
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


def save_hf_xlnet(model: XLNetLM, path: str | Path, tokenizer: str | Path | None = None) -> Path:
    """Write ``model`` as a Hugging Face directory that ``transformers.XLNetLMHeadModel.from_pretrained`` loads.

    Args:
        model: the attnkit XLNet.
        path: the directory to write (atomically).
        tokenizer: a ``tokenizer.json`` to copy beside the weights.

    Returns:
        The directory.
    """
    import json
    import shutil

    from safetensors.torch import save_file

    from attnkit.io import atomic_directory

    c = model.config
    config = {"model_type": "xlnet", "architectures": ["XLNetLMHeadModel"], "vocab_size": c.vocab_size, "d_model": c.d_model,
              "n_layer": c.n_layers, "n_head": c.n_heads, "d_head": c.d_model // c.n_heads, "d_inner": c.d_ff,
              "ff_activation": c.activation, "untie_r": True, "attn_type": "bi", "initializer_range": c.init_std,
              "layer_norm_eps": c.norm_eps, "dropout": c.dropout, "mem_len": None, "reuse_len": None, "bi_data": False,
              "clamp_len": -1, "same_length": False, "pad_token_id": c.pad_id, "tie_word_embeddings": True}
    own = model.state_dict()
    d = c.d_model
    state = {"transformer.word_embedding.weight": own["embed.weight"], "transformer.mask_emb": own["mask_emb"],
             "lm_loss.weight": own["embed.weight"], "lm_loss.bias": own["lm_head.bias"]}
    for i in range(c.n_layers):
        for ours, (theirs, how) in LAYER.items():
            w = own[f"layers.{i}.{ours}"]
            if how == "in":
                w = w.T.reshape(d, c.n_heads, d // c.n_heads)
            elif how == "out":
                w = w.reshape(d, c.n_heads, d // c.n_heads)
            state[f"transformer.layer.{i}.{theirs}"] = w
    state = {k: v.detach().contiguous().clone() for k, v in state.items()}

    def fill(tmp: Path) -> None:
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        if tokenizer is not None:
            shutil.copyfile(tokenizer, tmp / "tokenizer.json")

    atomic_directory(Path(path), fill)
    return Path(path)

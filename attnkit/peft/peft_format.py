"""peft's format: its key names, its ``adapter_config.json``, and attnkit's adapters in both directions.

A LoRA tensor of attnkit layer ``L`` (slice ``p``) is peft's
``base_model.model.<HF name of L or of its slice>.lora_A.weight`` (``lora_B.weight``,
``lora_magnitude_vector``); a task head trained beside an adapter is
``base_model.model.<HF name>.weight`` (``base_model.<HF name>`` beside a prefix or prompt, as
peft writes them); a prefix table or prompt embedding is ``prompt_embeddings``. Hugging Face names
come from the hub key maps (:mod:`attnkit.peft.names`). GPT-2's fused ``c_attn`` is one layer in
peft, so attnkit's q/v slices of it are written as one exactly equivalent adapter of the whole
layer (:func:`fuse_slices`) and read back as slices (:func:`split_fused`).
"""

from __future__ import annotations

import math
from typing import Any, Callable

import torch
from torch import Tensor, nn

from attnkit.errors import CheckpointError
from attnkit.peft.lora import LoRAConfig, head_modules, lora_layers
from attnkit.peft.names import TASK_TYPES, hf_namer
from attnkit.peft.prefix import PrefixConfig
from attnkit.peft.prompt import PromptConfig

PEFT_TYPES = {"lora": "LORA", "qlora": "LORA", "prefix": "PREFIX_TUNING", "ptuning-v2": "PREFIX_TUNING", "prompt": "PROMPT_TUNING",
              "ptuning": "P_TUNING"}


def keep_modules(model: nn.Module, config: Any) -> tuple[str, ...]:
    """The modules trained in full beside the adapter: ``config.modules_to_save``, else the model's task head."""
    return config.modules_to_save if config.modules_to_save is not None else head_modules(model)


def sliced(model: nn.Module) -> dict[str, Any]:
    """LoRA layers adapted by row slices (q, k, v of a fused projection)."""
    return {n: m for n, m in lora_layers(model).items() if [p for p, _, _ in m.parts] != ["all"]}


@torch.no_grad()
def fuse_slices(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """The per-slice adapters of fused layers as one adapter of the whole layer, exactly: ``A' = [A_q; A_v]``
    (rank ``n r``) and a block ``B'`` holding each ``B`` in its slice's rows and rank columns, zero elsewhere
    (so ``B' A' = [B_q A_q; 0; B_v A_v]``); DoRA's magnitude of an unadapted row is its weight's norm.
    GPT-2's ``c_attn`` is one layer in peft, so this is how q/v slices are written for it."""
    out = dict(state)
    for name, m in sliced(model).items():
        r, parts = m.r, m.parts
        out[f"{name}.lora_A.all"] = torch.cat([out.pop(f"{name}.lora_A.{p}") for p, _, _ in parts])  # (n r, d_in)
        B = state[f"{name}.lora_A.{parts[0][0]}"].new_zeros(m.out_features, len(parts) * r)
        for i, (p, a, b) in enumerate(parts):
            B[a:b, i * r : (i + 1) * r] = out.pop(f"{name}.lora_B.{p}")
        out[f"{name}.lora_B.all"] = B
        if m.use_dora:
            mag = m.base_weight(torch.float32).norm(dim=1).cpu()
            for p, a, b in parts:
                mag[a:b] = out.pop(f"{name}.magnitude.{p}")
            out[f"{name}.magnitude.all"] = mag
    return out


def split_fused(model: nn.Module, state: dict[str, Tensor]) -> dict[str, Tensor]:
    """Undo :func:`fuse_slices`: each slice's ``A``, ``B`` (and magnitude) from the whole layer's."""
    out = dict(state)
    for name, m in sliced(model).items():
        if f"{name}.lora_A.all" not in out:
            continue
        r, A, B = m.r, out.pop(f"{name}.lora_A.all"), out.pop(f"{name}.lora_B.all")
        mag = out.pop(f"{name}.magnitude.all", None)
        for i, (p, a, b) in enumerate(m.parts):
            out[f"{name}.lora_A.{p}"] = A[i * r : (i + 1) * r]
            out[f"{name}.lora_B.{p}"] = B[a:b, i * r : (i + 1) * r]
            if mag is not None:
                out[f"{name}.magnitude.{p}"] = mag[a:b]
    return out


def peft_names(model: nn.Module, kind: str) -> Callable[[str], str]:
    """attnkit adapter key -> peft key for a model imported from Hugging Face ``kind``."""
    method, config = model.peft_method  # type: ignore[attr-defined]
    name = hf_namer(model, kind)
    layers = lora_layers(model)
    prompt_learning = method not in ("lora", "qlora")

    def rename(key: str) -> str:
        if key in ("prefix_table", "prompt_embeddings"):
            return "prompt_embeddings"
        for layer, m in layers.items():
            for kind_, peft_kind in (("lora_A", "lora_A.weight"), ("lora_B", "lora_B.weight"), ("magnitude", "lora_magnitude_vector")):
                pre = f"{layer}.{kind_}."
                if key.startswith(pre):
                    return f"base_model.model.{name(layer, key[len(pre):])}.{peft_kind}"
        module, _, param = key.rpartition(".")
        hf = name(module, "all")
        return f"{'base_model' if prompt_learning else 'base_model.model'}.{hf}.{param}"

    return rename


def peft_config(model: nn.Module, kind: str | None, base: str) -> dict[str, Any]:
    method, config = model.peft_method  # type: ignore[attr-defined]
    task = TASK_TYPES.get(type(model).__name__)
    name = hf_namer(model, kind) if kind else (lambda layer, part: layer if part == "all" else f"{layer}:{part}")
    keep = [name(k, "all") for k in keep_modules(model, config)]
    out: dict[str, Any] = {"peft_type": PEFT_TYPES[method], "task_type": task, "base_model_name_or_path": base,
                           "inference_mode": True, "modules_to_save": keep or None, "revision": None}
    if method in ("lora", "qlora"):
        whole = kind == "gpt2"  # c_attn is one layer: slices are written fused (fuse_slices)
        mods = sorted({name(layer, "all" if whole else p) for layer, m in lora_layers(model).items() for p, _, _ in m.parts})
        if whole:
            fused = {name(layer, "all"): len(m.parts) * m.r for layer, m in sliced(model).items()}
            out["rank_pattern"] = fused
            out["alpha_pattern"] = {k: config.scaling * (math.sqrt(r) if config.rslora else r) for k, r in fused.items()}
        out.update(r=config.r, lora_alpha=config.alpha, lora_dropout=config.dropout, target_modules=mods, use_rslora=config.rslora,
                   use_dora=config.dora, fan_in_fan_out=kind == "gpt2", bias="none", init_lora_weights=True)
    else:
        from attnkit.peft.prefix import attention_layers

        layers = attention_layers(model)
        d = layers[0][1].d_model
        out.update(num_virtual_tokens=config.n_virtual, token_dim=d, num_layers=len(layers), num_attention_heads=layers[0][1].n_heads,
                   num_transformer_submodules=1)
        if PEFT_TYPES[method] == "PREFIX_TUNING":
            out.update(prefix_projection=False, encoder_hidden_size=d)
        elif method == "ptuning":
            out.update(encoder_reparameterization_type=config.encoder.upper(), encoder_hidden_size=config.hidden,
                       encoder_num_layers=2, encoder_dropout=0.0)
        else:
            out.update(prompt_tuning_init="RANDOM")
    return out


def config_from_peft(data: dict[str, Any], model: nn.Module, kind: str | None, source: str) -> tuple[str, Any]:
    """``(method, config)`` of a peft ``adapter_config.json`` (one peft wrote, without an ``attnkit`` section)."""
    from attnkit.peft.targets import candidates

    ptype = data.get("peft_type")
    keep_hf = data.get("modules_to_save") or []
    name = hf_namer(model, kind) if kind else None
    linear_hf = {}
    if name is not None:
        for n, m in model.named_modules():
            if isinstance(m, nn.Linear):
                try:
                    linear_hf[name(n, "all")] = n
                except CheckpointError:
                    pass
    keep = tuple(linear_hf[k] for k in keep_hf if k in linear_hf) or None
    if ptype == "LORA":
        targets = []
        for pat in data.get("target_modules") or []:
            hit = []
            for t in candidates(model).values():
                try:
                    hf = name(t.linear, t.part) if name else t.name
                except CheckpointError:
                    continue
                if hf == pat or hf.endswith("." + pat):
                    hit.append(t.name)
            if not hit:
                raise CheckpointError(f"{source}: target module {pat!r} matches no layer of the base model")
            targets += hit
        return "lora", LoRAConfig(r=int(data["r"]), alpha=float(data.get("lora_alpha", 8)), dropout=float(data.get("lora_dropout", 0.0)),
                                  targets=tuple(targets), rslora=bool(data.get("use_rslora")), dora=bool(data.get("use_dora")),
                                  modules_to_save=keep)
    n = int(data.get("num_virtual_tokens", 0))
    if ptype == "PREFIX_TUNING":
        return "ptuning-v2", PrefixConfig(n_virtual=n, reparam=False, modules_to_save=keep)
    if ptype in ("PROMPT_TUNING", "P_TUNING"):
        return "prompt", PromptConfig(n_virtual=n, modules_to_save=keep)
    raise CheckpointError(f"{source}: peft_type {ptype!r} is not supported; use LORA, PREFIX_TUNING, PROMPT_TUNING or P_TUNING")

__all__ = ["PEFT_TYPES", "config_from_peft", "fuse_slices", "keep_modules", "peft_config", "peft_names", "sliced", "split_fused"]

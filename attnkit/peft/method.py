"""One ``peft`` config section for the run path, and the adapter it applies.

``method`` picks the adapter: ``lora`` (Hu et al. 2021; ``dora=true`` for DoRA, ``rslora=true``
for rsLoRA scaling), ``qlora`` (LoRA on an NF4 base, Dettmers et al. 2023), ``prefix`` (Li &
Liang 2021, with the MLP reparameterisation), ``ptuning-v2`` (deep prompts, no
reparameterisation), ``prompt`` (Lester et al. 2021) and ``ptuning`` (Liu et al. 2021, the
LSTM prompt encoder); ``none`` trains every weight.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from attnkit.config import Config, check
from attnkit.peft.lora import LoRAConfig, apply_lora
from attnkit.peft.prefix import PrefixConfig, apply_prefix
from attnkit.peft.prompt import PromptConfig, apply_prompt

Method = Literal["none", "lora", "qlora", "prefix", "ptuning-v2", "prompt", "ptuning"]
METHODS = ("none", "lora", "qlora", "prefix", "ptuning-v2", "prompt", "ptuning")


@dataclass(frozen=True, kw_only=True)
class PEFTConfig(Config):
    """The ``peft`` section of a run (``--peft METHOD``, ``--set peft.r=8``): the method and every method's settings.

    LoRA family: ``r``, ``alpha``, ``dropout``, ``targets``, ``rslora``, ``dora``. Prefix and prompts:
    ``n_virtual``, ``hidden`` (the width of prefix tuning's MLP, default 512, or of P-tuning's encoder, default 128), ``encoder`` (P-tuning:
    ``lstm`` or ``mlp``), ``init`` and ``init_text`` (prompt tuning). ``modules_to_save``: layers
    trained in full beside the adapter (default: the task head). ``quantize_embeddings`` (QLoRA
    only, default off as in the paper): store the token embedding table in NF4 too (see
    :mod:`attnkit.peft.lora`). ``init_from``: an adapter directory in peft's format (``adapter_config.json`` +
    ``adapter_model.safetensors``, e.g. peft's ``save_pretrained`` before training) to start the adapter and the head from,
    in place of their own initialisation; it must hold this section's adapter (method, targets, rank, virtual tokens and
    head), else the run stops with a :class:`~attnkit.errors.ConfigError` (see :func:`attnkit.peft.files.init_adapter_from`).
    """

    method: Method = "none"
    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.05
    targets: tuple[str, ...] = ("q", "v")
    rslora: bool = False
    dora: bool = False
    n_virtual: int = 20
    hidden: int | None = None
    encoder: Literal["lstm", "mlp"] = "lstm"
    init: Literal["random", "vocab", "text"] = "random"
    init_text: str = ""
    modules_to_save: tuple[str, ...] | None = None
    quantize_embeddings: bool = False
    init_from: str | None = None

    def validate(self) -> None:
        check(self.r > 0, "r", self.r, "must be a positive rank")
        check(self.alpha > 0, "alpha", self.alpha, "must be positive")
        check(0.0 <= self.dropout < 1.0, "dropout", self.dropout, "must be in [0, 1)")
        check(self.n_virtual > 0, "n_virtual", self.n_virtual, "must be positive")
        check(self.hidden is None or self.hidden > 0, "hidden", self.hidden, "must be positive or null (the method's default)")
        check(not self.quantize_embeddings or self.method in ("none", "qlora"), "quantize_embeddings", self.quantize_embeddings,
              "applies to the qlora method only (an NF4 base)")
        check(self.init != "text" or bool(self.init_text), "init_text", self.init_text, "must be a text when init='text'")
        check(self.init_from is None or self.method != "none", "init_from", self.init_from,
              "starts an adapter: set peft.method too (full fine-tuning has no adapter to start)")

    @property
    def enabled(self) -> bool:
        return self.method != "none"

    def method_config(self) -> Config:
        """The adapter's own config (:class:`LoRAConfig`, :class:`PrefixConfig` or :class:`PromptConfig`)."""
        m = self.method
        if m in ("lora", "qlora"):
            return LoRAConfig(r=self.r, alpha=self.alpha, dropout=self.dropout, targets=self.targets, rslora=self.rslora,
                              dora=self.dora, modules_to_save=self.modules_to_save, quantize="nf4" if m == "qlora" else "none",
                              quantize_embeddings=self.quantize_embeddings)
        if m in ("prefix", "ptuning-v2"):
            return PrefixConfig(n_virtual=self.n_virtual, reparam=m == "prefix", hidden=self.hidden or 512, modules_to_save=self.modules_to_save)
        return PromptConfig(n_virtual=self.n_virtual, encoder="none" if m == "prompt" else self.encoder,
                            hidden=self.hidden or 128,
                            init=self.init, init_text=self.init_text, modules_to_save=self.modules_to_save)


def apply_method(model: nn.Module, method: str, config: Config, init_ids: list[int] | None = None) -> nn.Module:
    """Apply the adapter ``method`` with its own ``config`` to ``model`` in place; record both on the model."""
    if method in ("lora", "qlora"):
        apply_lora(model, config)  # type: ignore[arg-type]
    elif method in ("prefix", "ptuning-v2"):
        apply_prefix(model, config)  # type: ignore[arg-type]
    elif method in ("prompt", "ptuning"):
        apply_prompt(model, config, init_ids)  # type: ignore[arg-type]
    else:
        from attnkit.errors import ConfigError

        raise ConfigError(f"peft.method={method!r} is not an adapter; choose one of: {', '.join(METHODS[1:])}")
    model.peft_method = (method, config)
    return model


def apply_peft(model: nn.Module, config: PEFTConfig, init_ids: list[int] | None = None) -> nn.Module:
    """Apply the adapter that ``config.method`` names (nothing for ``none``); return ``model``."""
    if not config.enabled:
        return model
    return apply_method(model, config.method, config.method_config(), init_ids)


__all__ = ["METHODS", "PEFTConfig", "apply_method", "apply_peft"]

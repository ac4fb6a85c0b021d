"""Parameter-efficient fine-tuning applied to a built model: LoRA, DoRA, QLoRA, prefix tuning,
P-tuning v2, prompt tuning and P-tuning (see docs/peft.md).

    model = attnkit.load("runs/sst2/model")
    apply_lora(model, LoRAConfig(r=8, alpha=16, targets=("q", "v")))
    print(trainable_parameters(model))
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from attnkit.peft.files import adapter_state_dict, attach_saving, is_adapter_dir, load_adapted, load_adapter_into, save_adapter
from attnkit.peft.lora import LoRAConfig, LoRALinear, apply_lora, merge, merge_and_unload, unmerge
from attnkit.peft.method import METHODS, PEFTConfig, apply_method, apply_peft
from attnkit.peft.nf4 import NF4Embedding, NF4Linear, NF4TiedLinear, dequantize_nf4, quantize_nf4
from attnkit.peft.prefix import PrefixConfig, apply_prefix
from attnkit.peft.prompt import PromptConfig, apply_prompt


@dataclass(frozen=True)
class ParameterCount:
    """Trainable and total parameters (an NF4 weight counts its values, not its bytes)."""

    trainable: int
    total: int

    @property
    def percent(self) -> float:
        return 100.0 * self.trainable / max(self.total, 1)

    def __str__(self) -> str:
        return f"trainable parameters {self.trainable:,} of {self.total:,} ({self.percent:.3f}%)"


def trainable_parameters(model: nn.Module) -> ParameterCount:
    """Count ``model``'s trainable parameters against all of them (tied tensors once, NF4 weights by their values)."""
    seen: set[int] = set()
    trainable = total = 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    for m in model.modules():
        if isinstance(m, NF4Linear):
            total += m.in_features * m.out_features + (m.bias.numel() if m.bias is not None else 0)
        elif isinstance(m, NF4Embedding):
            total += m.num_embeddings * m.embedding_dim  # a tied NF4 output layer reads this table: counted once
        elif isinstance(m, NF4TiedLinear) and m.bias is not None:
            total += m.bias.numel()
    return ParameterCount(trainable, total)


__all__ = ["LoRAConfig", "LoRALinear", "METHODS", "NF4Embedding", "NF4Linear", "NF4TiedLinear", "PEFTConfig", "ParameterCount", "PrefixConfig", "PromptConfig",
           "adapter_state_dict", "apply_lora", "apply_method", "apply_peft", "apply_prefix", "apply_prompt", "attach_saving",
           "dequantize_nf4", "is_adapter_dir", "load_adapted", "load_adapter_into", "merge", "merge_and_unload", "quantize_nf4",
           "save_adapter", "trainable_parameters", "unmerge"]

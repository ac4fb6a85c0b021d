"""Parameter counts with a breakdown by what the parameters are.

For a BERT-shaped encoder (d_ff = 4H) the matrix weights are V*H for the token
embedding plus 12*H^2 per layer: 4*H^2 for the Q, K, V and output projections and
8*H^2 for the two FFN matrices (Devlin et al. 2019 count 110M for L=12, H=768).
"""

from __future__ import annotations

from collections import OrderedDict

from torch import nn

from attnkit.attention.multihead import MultiHeadAttention
from attnkit.layers.ffn import FeedForward

CATEGORIES = ("embeddings", "attention", "feed_forward", "layer_norm", "output_head", "other")


def parameter_breakdown(model: nn.Module) -> "OrderedDict[str, dict[str, int]]":
    """Count each distinct parameter once (tied weights are shared), by category.

    Returns:
        ``{category: {"matrices": n, "vectors": n, "total": n}}`` plus ``"all"``.
    """
    owner: dict[int, str] = {}
    for mod_name, mod in model.named_modules():
        cat = _category(mod_name, mod)
        if cat is None:
            continue
        for p in mod.parameters(recurse=True):
            owner.setdefault(id(p), cat)
    out: OrderedDict[str, dict[str, int]] = OrderedDict((c, {"matrices": 0, "vectors": 0, "total": 0}) for c in CATEGORIES)
    seen: set[int] = set()
    for p in model.parameters():  # model.parameters() already yields tied tensors once
        if id(p) in seen:
            continue
        seen.add(id(p))
        cat = owner.get(id(p), "other")
        kind = "matrices" if p.dim() >= 2 else "vectors"
        out[cat][kind] += p.numel()
        out[cat]["total"] += p.numel()
    out["all"] = {k: sum(v[k] for c, v in out.items() if c != "all") for k in ("matrices", "vectors", "total")}
    return out


def _category(name: str, mod: nn.Module) -> str | None:
    if isinstance(mod, MultiHeadAttention):
        return "attention"
    if isinstance(mod, FeedForward):
        return "feed_forward"
    if isinstance(mod, nn.LayerNorm):
        return "layer_norm"
    if isinstance(mod, nn.Embedding):
        return "embeddings"
    if name.endswith("lm_head") or name.endswith("head"):
        return "output_head"
    return None


def format_breakdown(breakdown: "OrderedDict[str, dict[str, int]]") -> str:
    """A small text table."""
    lines = [f"{'part':<14}{'matrices':>14}{'vectors':>12}{'total':>14}"]
    for cat, v in breakdown.items():
        if cat != "all" and v["total"] == 0:
            continue
        if cat == "all":
            lines.append("-" * 54)
        lines.append(f"{cat:<14}{v['matrices']:>14,}{v['vectors']:>12,}{v['total']:>14,}")
    return "\n".join(lines)

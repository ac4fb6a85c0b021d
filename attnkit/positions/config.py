"""The positional choice of an attention layer, as a config (``model.attention.position``)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from attnkit.config import Config, check
from attnkit.errors import ConfigError

PositionKind = Literal["none", "rotary", "alibi", "t5_bias", "relative_key", "relative_key_query", "xl_relative"]
BIAS_KINDS = ("alibi", "t5_bias", "relative_key", "relative_key_query", "xl_relative")
# Kernels without a softmax over positions to add a score bias to: (kernelised) linear attention and
# Performer have no score matrix, Linformer scores projected keys, LSH attends within hash buckets.
NO_BIAS_KERNELS = ("linear", "performer", "linformer", "lsh", "hierarchical")


@dataclass(frozen=True, kw_only=True)
class PositionConfig(Config):
    """Which position enters attention, and its settings (the unused ones are ignored).

    ``kind``: ``none`` (the model's absolute embeddings only), ``rotary`` (:mod:`attnkit.positions.rotary`),
    ``alibi``, ``t5_bias``, ``relative_key``, ``relative_key_query``, ``xl_relative``. A model whose
    attention carries positions adds no absolute position embeddings.

    Rotary: ``rotary_dim`` (None: all of the head), ``base``, ``layout``, ``scaling`` with ``factor`` and
    ``original_max_len``. T5: ``n_buckets``, ``max_distance``, ``bidirectional`` (None: unless causal), and
    ``t5_train_path``, how a trained table reaches the scores (:mod:`attnkit.positions.t5_bias`): ``distance``
    (default) looks the table up once per distance j - i and expands that vector to the bias with a strided copy
    whose backward sums diagonals, on every device and kernel; ``flex_band`` keeps causal self-attention in
    FlexAttention on CUDA, the kernel reading the band of distinct values without autograd and their gradient
    computed outside it (:mod:`attnkit.positions.t5_band`; other calls and devices run as ``distance``);
    ``dense`` gathers the table at every (i, j), the reference. Evaluation,
    decoding and a frozen table use the bucket ``score_mod`` on CUDA whatever the choice. ``t5_lr_scale``: the
    table's learning rate over the optimizer's (the table is never weight-decayed; see
    :class:`~attnkit.positions.t5_bias.T5RelativeBias`).
    BERT's relative kinds: ``max_distance`` (the clipping distance, BERT's ``max_position_embeddings``).
    """

    kind: PositionKind = "none"
    rotary_dim: int | None = None
    base: float = 10000.0
    layout: Literal["half", "interleaved"] = "half"
    scaling: Literal["none", "linear", "ntk", "yarn"] = "none"
    factor: float = 1.0
    original_max_len: int = 2048
    n_buckets: int = 32
    max_distance: int = 128
    bidirectional: bool | None = None
    t5_train_path: Literal["dense", "distance", "flex_band"] = "distance"
    t5_lr_scale: float = 1.0

    def validate(self) -> None:
        check(self.rotary_dim is None or (self.rotary_dim > 0 and self.rotary_dim % 2 == 0), "position.rotary_dim",
              self.rotary_dim, "must be a positive even number (or null: the whole head)")
        check(self.base > 1, "position.base", self.base, "must be greater than 1")
        check(self.factor >= 1, "position.factor", self.factor, "must be at least 1")
        check(self.original_max_len > 0, "position.original_max_len", self.original_max_len, "must be positive")
        check(self.n_buckets >= 4, "position.n_buckets", self.n_buckets, "must be at least 4")
        check(self.max_distance > 0, "position.max_distance", self.max_distance, "must be positive")
        check(self.t5_lr_scale > 0, "position.t5_lr_scale", self.t5_lr_scale, "must be positive")
        if self.kind == "t5_bias":  # the exact buckets end at n/4 per direction (bidirectional), n/2 (causal)
            least = self.n_buckets // (4 if self.bidirectional else 2)
            check(self.max_distance > least, "position.max_distance", self.max_distance,
                  f"must exceed the exact buckets' {least} (n_buckets / {4 if self.bidirectional else 2}"
                  f"{'' if self.bidirectional else ', as causal attention uses them'})")

    @property
    def adds_bias(self) -> bool:
        """Whether the kind adds a score bias (every kind but ``none`` and ``rotary``)."""
        return self.kind in BIAS_KINDS


def check_kernel(position: PositionConfig, kernel: str) -> None:
    """Refuse a score-bias position with a kernel that has no softmax over positions to add it to.

    Raises:
        ConfigError: naming both choices.
    """
    if position.adds_bias and kernel in NO_BIAS_KERNELS:
        raise ConfigError(f"attention.position.kind={position.kind!r} adds a score bias, which attention.kind={kernel!r} "
                          "cannot take (it has no softmax over positions); use position kind 'rotary' or a softmax kernel")

"""BERT's relative position scores, ``position_embedding_type`` ``relative_key`` and ``relative_key_query``.

* ``relative_key`` (Shaw et al. 2018, eq. (5), the key-side term a^K_ij; Huang et al. 2020 "method 3"
  without the key term): e_ij = (x_i W^Q)(x_j W^K + a_ij)^T / sqrt(d), a_ij = w_clip(i - j).
* ``relative_key_query`` (Huang et al. 2020, section 3.3, "method 4"): e_ij = (q_i k_j + q_i a_ij + k_j a_ij) / sqrt(d).

a_ij is a learned ``head_dim`` vector per relative distance i - j (shared by the heads of a layer,
one table per layer), with distances clipped to +-(``max_distance`` - 1) (Shaw et al.'s clipping;
Hugging Face's BERT sizes the table ``2 * max_position_embeddings - 1`` and never needs it). The
q k term is the kernel's; this module returns the rest, scaled like it.

The term q_i a_ij is computed as one product of the queries with the distinct distances' vectors,
``(B, H, Tq, R)``, then gathered into place: no ``(Tq, Tk, d)`` tensor is built.
"""

from __future__ import annotations

from torch import Tensor, nn

from attnkit.positions.base import ScoreBias, distances, repeat_kv


class RelativeKey(ScoreBias):
    """Learned relative-distance vectors added to the keys (and, with ``query=True``, to the queries).

    Args:
        head_dim: features per head d.
        max_distance: distances up to ``max_distance - 1`` each way have their own vector
            (BERT: ``max_position_embeddings``).
        query: the ``relative_key_query`` variant (the k_j a_ij term too).
    """

    content = True

    def __init__(self, head_dim: int, max_distance: int = 512, query: bool = False) -> None:
        super().__init__()
        if max_distance < 1:
            raise ValueError(f"max_distance={max_distance!r} must be positive")
        self.max_distance, self.query = max_distance, query
        self.distance_embedding = nn.Embedding(2 * max_distance - 1, head_dim)  # row i - j + max_distance - 1
        nn.init.normal_(self.distance_embedding.weight, std=0.02)

    def bias(self, q: Tensor, k: Tensor, q_pos: Tensor, *, causal: bool, scale: float, q_offset: int | None = None) -> Tensor:
        m = self.max_distance
        rows = (distances(q_pos, k.shape[-2]).clamp(-(m - 1), m - 1) + (m - 1))  # (..., Tq, Tk) table rows
        lo = 0
        if q_offset is not None:  # only the rows of the distances present
            lo = max(q_offset - (k.shape[-2] - 1), -(m - 1)) + m - 1
            hi = min(q_offset + q.shape[-2] - 1, m - 1) + m - 1
            table, rows = self.distance_embedding.weight[lo : hi + 1], rows - lo  # (R, d)
        else:
            table = self.distance_embedding.weight
        b, h, tq, _ = q.shape
        idx = rows.expand(b, h, tq, k.shape[-2]) if rows.dim() == 2 else rows[:, None].expand(b, h, tq, k.shape[-2])
        table = table.to(q.dtype)
        out = (q @ table.T).gather(-1, idx)  # q_i a_ij: (B, H, Tq, Tk)
        if self.query:
            kh = repeat_kv(k, h)  # (B, H, Tk, d)
            out = out + (kh @ table.T).gather(-1, idx.transpose(-1, -2)).transpose(-1, -2)  # k_j a_ij
        return out * scale

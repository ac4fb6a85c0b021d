"""UniLM (Dong et al. 2019): a BERT masked-LM model whose self-attention mask is given per batch.

:class:`UnilmMLM` is :class:`~attnkit.models.bert_heads.BertMLM` (the same weights, so a BERT
checkpoint starts it and its encoder fine-tunes as any BERT's) whose ``forward`` also takes a
``(B, T, T)`` self-attention mask (:func:`attnkit.data.unilm.unilm_mask`) shared by every layer.
"""

from __future__ import annotations

from torch import Tensor

from attnkit.models.base import register_model
from attnkit.models.bert import BertOutput
from attnkit.models.bert_heads import BertMLM, HeadOutput


@register_model("unilm-mlm")
class UnilmMLM(BertMLM):
    """Masked LM over the shared encoder with a per-batch self-attention mask (UniLM, eq. 2)."""

    def forward(self, ids: Tensor, *, attention_mask: Tensor | None = None, segment_ids: Tensor | None = None,
                output_hidden_states: bool = False, self_attention_mask: Tensor | None = None,
                positions: Tensor | None = None) -> HeadOutput:
        """``self_attention_mask: (B, T, T)`` bool, True where query i may attend to key j; without it, BERT's padding mask.

        Args:
            ids: ``(B, T)`` token ids.
            attention_mask: ``(B, T)`` 1 for real tokens (used when no ``self_attention_mask`` is given).
            segment_ids: ``(B, T)`` segment ids.
            output_hidden_states: ignored with a ``self_attention_mask``.
            self_attention_mask: the UniLM mask.
            positions: ``(B, P)`` rows to run the head on (:meth:`BertMLM.forward`).
        """
        if self_attention_mask is None:
            return super().forward(ids, attention_mask=attention_mask, segment_ids=segment_ids,
                                   output_hidden_states=output_hidden_states, positions=positions)
        bert = self.bert
        x = bert.embed(ids, segment_ids)  # (B, T, d_model)
        mask = self_attention_mask[:, None]  # (B, 1, T, T): one mask for every head
        for layer in bert.layers:
            x, _ = layer(x, mask)
        h = x if positions is None else x.gather(1, positions[..., None].expand(-1, -1, x.shape[-1]))  # (B, T or P, H)
        h = self.norm(self.act(self.transform(h)))  # (B, T or P, E)
        return HeadOutput(logits=self.decoder(h), encoder=BertOutput(last_hidden=x, pooled=None))

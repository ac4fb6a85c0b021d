"""AutoPrompt (Shin et al. 2020): trigger tokens for a cloze pattern, found by gradient-guided search over the vocabulary.

The pattern holds ``n`` trigger tokens in a ``{t}`` slot (``"{a} {t} [MASK]."``), all ``[MASK]``
at the start (section 2.2). The masked LM stays frozen and the verbaliser is fixed; the search
minimises the cross-entropy of the verbaliser scores (:func:`~attnkit.training.pet.mask_scores`)
on the training examples. Each iteration:

1. the gradient ``g`` of the loss with respect to the input embedding at a trigger position,
   averaged over a batch, ranks every vocabulary token ``w`` by the first-order change it
   would make, ``e_w . g`` (eq. 2: the candidates are the ``k`` tokens of lowest ``e_w . g``,
   the directions that lower the loss most);
2. each candidate replaces that trigger and the batch loss is measured exactly; the best
   candidate is kept only if it lowers the loss (the search never moves uphill on its batch).

The trigger position changes every iteration (left to right, cyclically); special tokens are
never candidates.
"""

from __future__ import annotations

import random
from typing import Any, Sequence

import torch
from torch import Tensor, nn

from attnkit.training.pet import Cloze, Pattern, collate_cloze, encode_cloze, mask_scores


def _slot_start(pattern: Pattern, tok: Any, data: Any, labels: Sequence[str], max_len: int) -> list[int]:
    """Where each row's trigger slot starts: the row encoded with marker triggers, found by their value."""
    marker = tok.mask_id
    probe = Pattern(pattern.text, triggers=tuple([marker] * len(pattern.triggers)))
    rows = encode_cloze(tok, data, probe, labels, max_len)
    starts = []
    for ids, m in zip(rows.ids, rows.mask_pos):
        runs = [i for i in range(len(ids) - len(pattern.triggers) + 1)
                if all(ids[i + j] == marker for j in range(len(pattern.triggers))) and not (i <= m < i + len(pattern.triggers))]
        starts.append(runs[0])
    return starts


def batch_loss(model: nn.Module, rows: Cloze, index: Sequence[int], pad_id: int, label_ids: Tensor, device: torch.device) -> Tensor:
    """Mean cross-entropy of the verbaliser scores of the rows ``index``."""
    b = collate_cloze(rows, index, pad_id).to(device)
    scores = mask_scores(model, b.ids, b.attention_mask, b.mask_pos, label_ids)  # (B, C)
    return nn.functional.cross_entropy(scores.float(), b.targets)


def candidate_scores(model: nn.Module, rows: Cloze, index: Sequence[int], starts: Sequence[int], slot: int, pad_id: int,
                     label_ids: Tensor, device: torch.device) -> Tensor:
    """``(V,)``: ``e_w . g`` for every token ``w``, ``g`` the batch-mean gradient of the loss at trigger ``slot`` (eq. 2)."""
    table = model.bert.embed.tokens  # (V, E)
    captured: list[Tensor] = []

    def keep(_m: nn.Module, _inp: Any, out: Tensor) -> Tensor:
        out = out.detach().requires_grad_(True)  # the frozen table's output, made a leaf whose gradient is kept
        captured.append(out)
        return out

    handle = table.register_forward_hook(keep)
    try:
        loss = batch_loss(model, rows, index, pad_id, label_ids, device)
        loss.backward()
    finally:
        handle.remove()
    emb = captured[0]  # (B, T, E)
    pos = torch.tensor([starts[i] + slot for i in index], device=emb.device)
    g = emb.grad[torch.arange(len(index), device=emb.device), pos].mean(0)  # (E,)
    model.zero_grad(set_to_none=True)
    return table.weight.detach() @ g  # (V,)


def search_triggers(model: nn.Module, tok: Any, data: Any, labels: Sequence[str], label_ids: Sequence[int], template: str, *,
                    n_triggers: int = 3, iters: int = 20, k: int = 10, batch_size: int = 32, max_len: int = 128, seed: int = 0,
                    device: torch.device | str = "cpu", log: Any = None) -> tuple[Pattern, list[float]]:
    """AutoPrompt's search: ``n_triggers`` tokens for the ``{t}`` slot of ``template``, the masked LM frozen.

    Args:
        model: a :class:`~attnkit.models.bert_heads.BertMLM` (left unchanged).
        tok: its WordPiece tokenizer.
        data: labelled :class:`~attnkit.data.glue.ClassificationData` (the K-shot training set).
        labels, label_ids: the label names and the verbaliser's token per label.
        template: a pattern with ``{a}``, a ``{t}`` slot and one ``[MASK]``.
        iters: search iterations; k: candidates tried per iteration.
        batch_size: rows per iteration, drawn with ``seed``.

    Returns:
        The pattern with its trigger tokens, and the batch loss after each iteration.
    """
    device = torch.device(device)
    was = model.training
    model.eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    ids_label = torch.tensor(list(label_ids), device=device)
    special = torch.tensor(tok.special_ids, device=device)
    triggers = [tok.mask_id] * n_triggers
    rng = random.Random(seed)
    history: list[float] = []
    pattern = Pattern(template, triggers=tuple(triggers))
    starts = _slot_start(pattern, tok, data, labels, max_len)
    for it in range(iters):
        rows = encode_cloze(tok, data, pattern, labels, max_len)
        index = rng.sample(range(len(rows)), min(batch_size, len(rows)))
        slot = it % n_triggers
        with torch.enable_grad():
            scores = candidate_scores(model, rows, index, starts, slot, tok.pad_id, ids_label, device)  # (V,)
        scores[special] = float("inf")
        candidates = torch.topk(-scores, k).indices.tolist()
        with torch.no_grad():
            best = float(batch_loss(model, rows, index, tok.pad_id, ids_label, device))
            choice = triggers[slot]
            for w in candidates:
                trial = Pattern(template, triggers=tuple(triggers[:slot] + [w] + triggers[slot + 1:]))
                loss = float(batch_loss(model, encode_cloze(tok, data, trial, labels, max_len), index, tok.pad_id, ids_label, device))
                if loss < best:
                    best, choice = loss, w
        triggers[slot] = choice
        pattern = Pattern(template, triggers=tuple(triggers))
        history.append(best)
        if log is not None:
            log(f"autoprompt {it + 1}/{iters}: loss {best:.4f}, triggers {tok.tokenizer.decode(triggers, skip_special_tokens=False)!r}")
    for p in model.parameters():
        p.requires_grad_(True)
    model.train(was)
    return pattern, history


__all__ = ["batch_loss", "candidate_scores", "search_triggers"]

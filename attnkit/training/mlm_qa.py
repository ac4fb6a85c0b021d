"""Reading comprehension with a masked LM, non-autoregressively: the answer's tokens in one pass.

The input is ``[CLS] passage [SEP] question [SEP] [MASK] x k`` (segment 0 for the passage, 1 for
the question and the masks). The masked LM predicts the token at every mask at once; training
is its cross-entropy at the answer positions against the answer's WordPiece tokens, then
``[SEP]`` (the end of the answer); the positions after the end marker carry no target, so the
loss is that of the answer and its length alone. An answer longer than ``k`` tokens is cut to
``k`` (and counted); one of exactly ``k`` has no end marker.

The answer is read off the ``k`` distributions at once, by one of two rules (``read_off``):

* ``"passage"`` (:func:`passage_spans`), the default: the answer is a span of the passage, as an
  extractive reader's is. The span ``p_i .. p_{i+L-1}`` of ``L`` passage tokens (``1 <= L <= k - 1``)
  scores ``sum_{s<L} log p_s(p_{i+s}) + log p_L([SEP])``, its tokens at the first ``L`` positions
  and the end marker right after them; the best span over every start and length wins, and the
  answer is the passage's text from its first token's first character to its last token's last.
  Spans lie inside the passage tokens the row kept (never ``[CLS]``, ``[SEP]``, the question or
  padding).
* ``"free"`` (:func:`best_answers`): the most probable answer of length ``n`` takes the best token
  other than ``[SEP]`` / ``[PAD]`` at each of its positions, and its probability is the product of
  theirs and of ``[SEP]`` at position ``n``; the length with the highest product wins
  (``1 <= n <= k``: a SQuAD answer is never empty). Where its tokens occur in the passage the
  answer is the passage's text there (:func:`passage_text`); elsewhere they are joined as
  WordPiece decodes them. Nothing ties these tokens to the passage: a model trained on few
  questions can predict answer words that the passage does not hold.

One forward pass answers a question, where a left-to-right decoder needs ``k``; the price is
that the ``k`` tokens are predicted independently of each other (each sees the input, not the
other predictions). The passage is cut to fit ``max_len``: from its start, or, for a training
question whose answer lies beyond, around the answer (so that every training answer is in the
text the model reads).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterator, Literal, Sequence

import torch
from torch import Tensor, nn

from attnkit.data.batching import bucketed_batches, pad, sorted_batches
from attnkit.data.squad import QAExample
from attnkit.data.transfer import TensorBatch
from attnkit.metrics import squad_scores
from attnkit.objectives.classification import classification_loss
from attnkit.training.dev import dev_pass

IGNORE = -100
ReadOff = Literal["passage", "free"]
READ_OFFS = ("passage", "free")


def answer_targets(answer_ids: Sequence[int], k: int, sep_id: int) -> tuple[list[int], bool]:
    """The ``k`` targets of the answer positions: the answer's tokens, ``[SEP]``, then IGNORE; and whether it was cut.

    Args:
        answer_ids: the answer's WordPiece ids.
        k: answer positions.
        sep_id: the end marker.

    Returns:
        ``(targets, cut)``: ``cut`` is True when the answer has more than ``k`` tokens (an answer of exactly
        ``k`` fills the positions without ``[SEP]``).
    """
    ids = list(answer_ids)
    if len(ids) >= k:  # no room for the end marker: reading stops at the last position
        return ids[:k], len(ids) > k
    return ids + [sep_id] + [IGNORE] * (k - len(ids) - 1), False


def best_answers(logits: Tensor, sep_id: int, stops: Sequence[int]) -> list[list[int]]:
    """The most probable non-empty answer of each row under the independent per-position distributions.

    The answer of length ``n`` scores ``sum_{j<n} max_{t not in stops} log p_j(t) + log p_n([SEP])`` (no end term
    for ``n = k``); the best ``n`` is taken and its tokens are each position's best non-stop token.

    Args:
        logits: ``(B, k, V)`` at the answer positions.
        sep_id: the end marker.
        stops: tokens that never belong to an answer (``[SEP]``, ``[PAD]``).

    Returns:
        Per row, the answer's ids (1 to ``k`` of them).
    """
    logp = torch.log_softmax(logits.float(), dim=-1)  # (B, k, V)
    end = logp[..., sep_id]  # (B, k)
    words = logp.clone()
    words[..., list(stops)] = float("-inf")
    best, ids = words.max(-1)  # (B, k)
    k = logits.shape[1]
    score = best.cumsum(-1)  # (B, k): the first n = j + 1 tokens
    score[:, : k - 1] += end[:, 1:]  # [SEP] right after them
    n = score.argmax(-1) + 1  # (B,)
    return [ids[b, : int(n[b])].tolist() for b in range(logits.shape[0])]


def passage_spans(logits: Tensor, passage_ids: Tensor, passage_lengths: Tensor, sep_id: int) -> tuple[Tensor, Tensor, Tensor]:
    """The best passage span of each row as the answer under the independent per-position distributions.

    The span of ``L`` tokens starting at passage token ``i`` (``1 <= L <= k - 1``, ``i + L <= passage_lengths[b]``) scores
    ``sum_{s<L} log p_s(passage_ids[b, i + s]) + log p_L([SEP])``. Per row the log-probabilities of the passage tokens at the
    ``k`` positions are gathered once, ``(k, P)``; the scores of all spans of length ``L`` are the running sum along the
    diagonals ``(s, i + s)`` up to ``s = L - 1`` plus the end term, so the work is a loop over ``L``, not over positions.
    Ties go to the shorter span, then the earlier start.

    Args:
        logits: ``(B, k, V)`` at the answer positions, ``k >= 2``.
        passage_ids: ``(B, P)`` each row's passage tokens from its start; entries from ``passage_lengths[b]`` on are ignored.
        passage_lengths: ``(B,)`` each row's passage tokens, at least 1.
        sep_id: the end marker.

    Returns:
        ``(starts, lengths, scores)``, each ``(B,)``: the best span's first passage token, its token count and its log-probability.
    """
    B, k, V = logits.shape
    P = passage_ids.shape[1]
    if k < 2:
        raise ValueError(f"logits has k={k} answer positions; a passage span needs k >= 2 (its tokens, then [SEP])")
    if passage_ids.shape[0] != B or passage_lengths.shape != (B,):
        raise ValueError(f"passage_ids {tuple(passage_ids.shape)} and passage_lengths {tuple(passage_lengths.shape)} "
                         f"do not match the {B} rows of logits")
    if B and (int(passage_lengths.min()) < 1 or int(passage_lengths.max()) > P):
        raise ValueError(f"passage_lengths must be in [1, {P}] (the columns of passage_ids); got {passage_lengths.tolist()}")
    logp = torch.log_softmax(logits.float(), dim=-1)  # (B, k, V)
    end = logp[..., sep_id]  # (B, k)
    tokens = logp.gather(-1, passage_ids.clamp(0, V - 1)[:, None, :].expand(B, k, P))  # (B, k, P): log p_s(p_i)
    inside = torch.arange(P, device=logits.device)[None, :] < passage_lengths.to(logits.device)[:, None]  # (B, P)
    scores = torch.full((B, k - 1, P), float("-inf"), device=logits.device)  # (B, k - 1, P): [b, L - 1, i], L tokens from i
    run = torch.zeros(B, P, device=logits.device)  # (B, P): sum_{s<L} log p_s(p_{i+s}) for the spans still inside
    for L in range(1, k):
        s = L - 1
        run = run[:, : P - s] + tokens[:, s, s:]  # (B, P - s): starts i whose last token i + s is a column of passage_ids
        ok = inside[:, s:]  # (B, P - s): token i + s is in the passage
        scores[:, s, : P - s] = (run + end[:, L, None]).masked_fill(~ok, float("-inf"))
    best, flat = scores.reshape(B, -1).max(-1)  # (B,): first maximum, so the shorter span, then the earlier start
    return flat % P, flat // P + 1, best


def passage_text(answer_ids: Sequence[int], passage_ids: Sequence[int], offsets: Sequence[tuple[int, int]], context: str) -> str | None:
    """The passage's own text of the answer's tokens: the characters from the first token's start to the last token's end
    at their first contiguous occurrence in ``passage_ids`` (``offsets``: each token's characters in ``context``);
    ``None`` when they do not occur there.

    WordPiece decoding does not give back the text it encoded (``56.2%`` decodes as ``56. 2 %``, ``Kraków`` as
    ``krakow``, ``Polignac's`` as ``polignac ' s``), which SQuAD's exact match counts as wrong; the extractive
    reader returns passage text for the same reason.
    """
    want, n = list(answer_ids), len(answer_ids)
    for s in range(len(passage_ids) - n + 1) if n else ():
        if passage_ids[s] == want[0] and list(passage_ids[s : s + n]) == want:
            return context[offsets[s][0] : offsets[s + n - 1][1]]
    return None


@dataclass
class MLMQARows:
    """Encoded questions: ``ids[i]``, ``segments[i]``, where the answer positions start, and their targets (IGNORE when unknown);
    ``offsets[i]`` the characters of each passage token (``ids[i][1 : 1 + len(offsets[i])]``) in ``contexts[i]``."""

    ids: list[list[int]]
    segments: list[list[int]]
    answer_start: list[int]
    targets: list[list[int]]
    truncated_passages: int = 0
    cut_answers: int = 0
    offsets: list[list[tuple[int, int]]] = field(default_factory=list)
    contexts: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.ids)

    def lengths(self) -> list[int]:
        return [len(r) for r in self.ids]


def encode_mlm_qa(tok, examples: Sequence[QAExample], *, k: int, max_len: int, max_question_len: int = 64,
                  train: bool = False) -> MLMQARows:
    """``[CLS] passage [SEP] question [SEP] [MASK] x k`` per question, with the first gold answer's targets.

    Args:
        tok: a :class:`~attnkit.data.wordpiece.WordPieceTokenizer` (with [MASK]).
        examples: the questions.
        k: answer positions.
        max_len: the longest row; the passage gets what the question and the masks leave.
        max_question_len: longer questions lose their end.
        train: cut the passage around the answer when the answer lies beyond the passage's first tokens.
    """
    enc = tok.tokenizer.encode
    rows = MLMQARows([], [], [], [])
    for e in examples:
        q = enc(e.question, add_special_tokens=False).ids[:max_question_len]
        budget = max_len - (3 + len(q) + k)
        if budget < 1:
            raise ValueError(f"max_len={max_len} leaves no room for the passage with a question of {len(q)} tokens and k={k}")
        c = enc(e.context, add_special_tokens=False)
        start = 0
        text, char = e.answers[0] if e.answers else ("", 0)
        if len(c.ids) > budget:
            rows.truncated_passages += 1
            if train and text:
                first = next((i for i, (s, t) in enumerate(c.offsets) if t > char), 0)
                start = max(0, min(first - budget // 2, len(c.ids) - budget))
        passage = c.ids[start : start + budget]
        ids = [tok.cls_id, *passage, tok.sep_id, *q, tok.sep_id]
        rows.answer_start.append(len(ids))
        ids += [tok.mask_id] * k
        rows.ids.append(ids)
        rows.offsets.append(list(c.offsets[start : start + budget]))
        rows.contexts.append(e.context)
        rows.segments.append([0] * (len(passage) + 2) + [1] * (len(q) + 1 + k))
        if text:
            targets, cut = answer_targets(enc(text, add_special_tokens=False).ids, k, tok.sep_id)
            rows.cut_answers += cut
        else:
            targets = [IGNORE] * k
        rows.targets.append(targets)
    return rows


def answer_logits(model: nn.Module, ids: Tensor, attention_mask: Tensor, segment_ids: Tensor, starts: Tensor, k: int) -> Tensor:
    """``(B, k, V)``: the masked LM's logits at each row's ``k`` answer positions, ``starts: (B,)`` their first.

    The head runs on those positions only (``positions`` of :meth:`~attnkit.models.bert_heads.BertMLM.forward`),
    the same numbers as its full output there without the ``T x V`` product elsewhere.
    """
    pos = starts[:, None] + torch.arange(k, device=ids.device)  # (B, k)
    return model(ids, attention_mask=attention_mask, segment_ids=segment_ids, positions=pos).logits  # (B, k, V)


@dataclass
class MLMQABatch(TensorBatch):
    ids: Tensor  # (B, T)
    segment_ids: Tensor  # (B, T)
    attention_mask: Tensor  # (B, T)
    targets: Tensor  # (B, T): IGNORE outside the answer positions
    starts: Tensor  # (B,): each row's first answer position
    index: list[int]


def collate(rows: MLMQARows, index: Sequence[int], pad_id: int) -> MLMQABatch:
    """Pad the chosen rows; the targets sit at each row's answer positions."""
    ids, mask = pad([rows.ids[i] for i in index], pad_id, return_mask=True)  # (B, T)
    seg = pad([rows.segments[i] for i in index], 0)
    targets = torch.full_like(ids, IGNORE)
    for n, i in enumerate(index):
        s = rows.answer_start[i]
        targets[n, s : s + len(rows.targets[i])] = torch.tensor(rows.targets[i])
    starts = torch.tensor([rows.answer_start[i] for i in index])
    return MLMQABatch(ids, seg, mask.long(), targets, starts, list(index))


def _answer_targets(b: MLMQABatch, k: int) -> Tensor:
    """``(B, k)``: the targets at the answer positions."""
    pos = b.starts[:, None] + torch.arange(k, device=b.ids.device)
    return b.targets.gather(1, pos)


def predict_answers(model: nn.Module, rows: MLMQARows, tok, *, k: int, batch_size: int = 64,
                    device: torch.device | str = "cpu", read_off: ReadOff = "passage") -> tuple[float, list[str]]:
    """The dev loss over the known answer positions and, per question, the answer read off one forward pass.

    Args:
        read_off: ``"passage"``, the best passage span (:func:`passage_spans`; needs ``k >= 2``), or ``"free"``, the best
            tokens (:func:`best_answers`) as the passage's text where they occur there.
    """
    if read_off not in READ_OFFS:
        raise ValueError(f"read_off={read_off!r} is not one of {', '.join(READ_OFFS)}")
    if read_off == "passage" and k < 2:
        raise ValueError(f"read_off='passage' needs k >= 2 (the answer's tokens, then [SEP]); got k={k}")
    index_batches = sorted_batches(rows.lengths(), batch_size)
    stops = (tok.sep_id, tok.pad_id)
    kept = [len(o) for o in rows.offsets]  # passage tokens of each row: ids[i][1 : 1 + kept[i]]

    def step(index: list[int]) -> tuple[Tensor, Tensor, Any]:
        b = collate(rows, index, tok.pad_id).to(torch.device(device))
        logits = answer_logits(model, b.ids, b.attention_mask, b.segment_ids, b.starts, k)  # (B, k, V)
        loss, n = classification_loss(logits, _answer_targets(b, k), ignore_index=IGNORE)
        if read_off == "free":
            return loss, n, best_answers(logits, tok.sep_id, stops)
        lengths = torch.tensor([max(kept[i], 1) for i in index])  # (B,), on the host: no device read
        P = int(lengths.max())
        starts, lens, _ = passage_spans(logits, b.ids[:, 1 : 1 + P], lengths, tok.sep_id)  # (B,) each
        return loss, n, torch.stack([starts, lens], 1)  # (B, 2), read after the pass

    was = model.training
    model.eval()
    with torch.no_grad():
        result = dev_pass(step, index_batches)
    model.train(was)
    answers = [""] * len(rows)
    for index, best in zip(index_batches, result.outputs):
        if read_off == "passage":
            for i, (start, length) in zip(index, best.tolist()):
                o = rows.offsets[i]
                answers[i] = rows.contexts[i][o[start][0] : o[start + length - 1][1]] if kept[i] else ""
            continue
        for n, i in enumerate(index):
            text = passage_text(best[n], rows.ids[i][1 : 1 + kept[i]], rows.offsets[i], rows.contexts[i])
            answers[i] = text if text is not None else tok.decode(best[n]).strip()
    return result.loss, answers


class MLMQATask:
    """Train the masked LM at the answer positions; evaluate dev loss, exact match and F1 (SQuAD's definitions)."""

    varying_lengths = True

    def __init__(self, train: MLMQARows, dev: MLMQARows | None, dev_examples: Sequence[QAExample], tok, *, k: int, batch_size: int,
                 eval_batch_size: int = 64, device: torch.device | str = "cpu", read_off: ReadOff = "passage") -> None:
        self.train, self.dev, self.dev_examples, self.tok, self.k = train, dev, list(dev_examples), tok, k
        self.read_off = read_off
        self.batch_size, self.eval_batch_size, self.device = batch_size, eval_batch_size, torch.device(device)

    def batches(self, epoch: int, seed: int) -> Iterator[MLMQABatch]:
        for index in bucketed_batches(self.train.lengths(), self.batch_size, bucket_size=50, seed=seed, epoch=epoch):
            yield collate(self.train, index, self.tok.pad_id).to(self.device)

    def input_tokens(self, batch: MLMQABatch) -> Tensor:
        return batch.attention_mask.sum()

    def loss(self, model: nn.Module, batch: MLMQABatch) -> tuple[Tensor, Tensor]:
        logits = answer_logits(model, batch.ids, batch.attention_mask, batch.segment_ids, batch.starts, self.k)  # (B, k, V)
        return classification_loss(logits, _answer_targets(batch, self.k), ignore_index=IGNORE)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        if self.dev is None:
            return {}
        loss, answers = predict_answers(model, self.dev, self.tok, k=self.k, batch_size=self.eval_batch_size, device=self.device,
                                       read_off=self.read_off)
        s = squad_scores({e.id: a for e, a in zip(self.dev_examples, answers)}, {e.id: e.answer_texts for e in self.dev_examples})
        return {"loss": loss, "exact_match": s["exact_match"], "f1": s["f1"]}


__all__ = ["MLMQARows", "MLMQATask", "answer_logits", "answer_targets", "best_answers", "collate", "encode_mlm_qa", "passage_spans",
           "passage_text", "predict_answers"]

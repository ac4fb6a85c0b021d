"""Extractive QA fine-tuning and answer extraction (Devlin et al. 2019, section 4.2).

Training: the loss of a window is the mean of the cross-entropies of the start and end
positions (the [CLS] position when the answer is not in the window).

Extraction (:func:`extract_answers`): for every question, over all of its windows, the
``n_best`` highest start logits and ``n_best`` highest end logits are paired; a pair is a
candidate when both tokens are context tokens, the start comes before or at the end, the
span is at most ``max_answer_len`` tokens and the window is the start token's
max-context window (:func:`attnkit.data.squad.max_context`). The candidate with the highest
``start + end`` logit wins and its characters are cut from the context through the tokens'
offsets, ``context[offset(start).begin : offset(end).end]``.
"""

from __future__ import annotations

from typing import Any, Iterator

import torch
from torch import Tensor, nn

from attnkit.data.squad import QABatch, QAExample, QAWindows, batches, make_windows
from attnkit.metrics import squad_scores
from attnkit.models.base import PretrainedModel
from attnkit.models.bert import BertModel
from attnkit.models.bert_heads import BertQA, BertTaskConfig
from attnkit.objectives.span import span_loss


def qa_model_from(model: PretrainedModel) -> BertQA:
    """A :class:`BertQA` around the encoder of ``model`` (a BertModel or any BERT-family head).

    A BertQA comes back as it is; otherwise the encoder's weights are kept and the span
    head is freshly initialised.
    """
    if isinstance(model, BertQA):
        return model
    encoder = model if isinstance(model, BertModel) else getattr(model, "bert", None)
    if not isinstance(encoder, BertModel):
        from attnkit.errors import CheckpointError

        raise CheckpointError(f"a {type(model).__name__} has no BERT-family encoder to fine-tune for QA")
    qa = BertQA(BertTaskConfig(encoder=encoder.config, num_labels=2))
    qa.bert.load_state_dict(encoder.state_dict())
    return qa


@torch.no_grad()
def window_logits(model: nn.Module, windows: QAWindows, pad_id: int, *, batch_size: int = 64, device: Any = "cpu") -> list[tuple[Tensor, Tensor]]:
    """Start and end logits (on the CPU, float) of every window, unpadded."""
    out: list[tuple[Tensor, Tensor]] = [None] * len(windows.windows)  # type: ignore[list-item]
    for b in batches(windows.windows, batch_size, pad_id):  # grouped by length: rows come back out of order
        b = b.to(device)
        logits = model(b.ids, attention_mask=b.attention_mask, segment_ids=b.segment_ids).logits.float().cpu()  # (B, T, 2)
        for n, i in enumerate(b.index):
            t = len(windows.windows[i].ids)
            out[i] = (logits[n, :t, 0], logits[n, :t, 1])
    return out


def extract_answers(
    examples: list[QAExample],
    windows: QAWindows,
    logits: list[tuple[Tensor, Tensor]],
    *,
    n_best: int = 20,
    max_answer_len: int = 30,
) -> dict[str, str]:
    """The best answer text of each example (see the module docstring); ``""`` when no span qualifies.

    Args:
        logits: per window, ``(start (T,), end (T,))``, in the order of ``windows.windows``.
    """
    best: dict[int, tuple[float, str]] = {}
    for w, (start_logits, end_logits) in zip(windows.windows, logits):
        context = examples[w.example].context
        starts = torch.topk(start_logits, min(n_best, len(start_logits))).indices.tolist()
        ends = torch.topk(end_logits, min(n_best, len(end_logits))).indices.tolist()
        for s in starts:
            if w.offsets[s] is None or not w.max_context[s]:
                continue
            for e in ends:
                if w.offsets[e] is None or e < s or e - s + 1 > max_answer_len:
                    continue
                score = float(start_logits[s] + end_logits[e])
                if w.example not in best or score > best[w.example][0]:
                    best[w.example] = (score, context[w.offsets[s][0] : w.offsets[e][1]])  # type: ignore[index]
    return {ex.id: best[n][1] if n in best else "" for n, ex in enumerate(examples)}


class QATask:
    """Fine-tune a :class:`BertQA` on labelled windows; evaluate with SQuAD's exact match and F1.

    Args:
        train: windows of the training questions (:func:`attnkit.data.squad.make_windows`).
        dev_examples, dev: the evaluation questions and their windows.
    """

    varying_lengths = True  # batches padded to their longest row

    def __init__(
        self,
        train: QAWindows,
        dev_examples: list[QAExample],
        dev: QAWindows,
        *,
        batch_size: int,
        pad_id: int,
        n_best: int = 20,
        max_answer_len: int = 30,
        device: torch.device | str = "cpu",
    ) -> None:
        if not train.windows:
            from attnkit.errors import DataError

            raise DataError("no training windows; the training file has no usable question")
        self.train, self.dev_examples, self.dev = train, dev_examples, dev
        self.batch_size, self.pad_id, self.n_best, self.max_answer_len = batch_size, pad_id, n_best, max_answer_len
        self.device = torch.device(device)
        self.last_predictions: dict[str, str] = {}

    def batches(self, epoch: int, seed: int) -> Iterator[QABatch]:
        for b in batches(self.train.windows, self.batch_size, self.pad_id, shuffle=True, seed=seed * 100_003 + epoch):
            yield b.to(self.device)

    def input_tokens(self, batch: QABatch) -> Tensor:
        """The non-padding tokens of the windows (question and context)."""
        return batch.attention_mask.sum()

    def loss(self, model: nn.Module, batch: QABatch) -> tuple[Tensor, Tensor]:
        out = model(batch.ids, attention_mask=batch.attention_mask, segment_ids=batch.segment_ids)
        return span_loss(out.start_logits, out.end_logits, batch.start, batch.end), torch.tensor(batch.ids.shape[0])

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        logits = window_logits(model, self.dev, self.pad_id, batch_size=self.batch_size, device=self.device)
        self.last_predictions = extract_answers(self.dev_examples, self.dev, logits, n_best=self.n_best, max_answer_len=self.max_answer_len)
        scores = squad_scores(self.last_predictions, {e.id: e.answer_texts for e in self.dev_examples})
        return {"exact_match": scores["exact_match"], "f1": scores["f1"]}


@torch.no_grad()
def answer(
    model: BertQA,
    tokenizer: Any,
    question: str,
    context: str,
    *,
    max_len: int = 384,
    doc_stride: int = 128,
    max_question_len: int = 64,
    n_best: int = 20,
    max_answer_len: int = 30,
) -> str:
    """The answer span of ``context`` to ``question`` (``""`` if none qualifies).

    Args:
        model: a QA model, e.g. ``attnkit.load(out_dir / "model")`` after ``attnkit finetune qa``.
        tokenizer: its :class:`attnkit.data.wordpiece.WordPieceTokenizer`.
    """
    was_training = model.training
    model.eval()
    ex = QAExample(id="q", question=question, context=context, answers=[("", 0)])
    limit = min(max_len, model.config.encoder.max_len)
    windows = make_windows(tokenizer, [ex], max_len=limit, doc_stride=doc_stride, max_question_len=max_question_len)
    device = next(model.parameters()).device
    logits = window_logits(model, windows, tokenizer.pad_id, device=device)
    model.train(was_training)
    return extract_answers([ex], windows, logits, n_best=n_best, max_answer_len=max_answer_len)["q"]

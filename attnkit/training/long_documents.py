"""Fine-tuning a classifier on documents longer than its positions, chunk by chunk (``finetune classify --set data.long=...``).

:mod:`attnkit.models.chunked` holds the model (``average`` of chunk logits, ``memory`` tokens carried from
chunk to chunk as in the Recurrent Memory Transformer, or Transformer-XL memory over the earlier chunks, ``xl``);
this module encodes the documents into chunks, batches them for :class:`attnkit.training.Trainer`, and scores a
test file with a saved model.
``data.long=truncate`` is the ordinary path (each document cut at ``data.max_len``), the baseline.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch
from torch import Tensor, nn

from attnkit.data.transfer import TensorBatch
from attnkit.errors import ConfigError
from attnkit.models.chunked import ChunkedClassifier, chunk_ids, collate_chunks

IGNORE = -100
UNLIMITED = 1_000_000  # tokenizer length limit while encoding whole documents


@dataclass
class ChunkBatch(TensorBatch):
    ids: Tensor  # (B, C, T)
    attention_mask: Tensor  # (B, C, T)
    chunks: Tensor  # (B,)
    targets: Tensor  # (B,)


def encode_documents(tok: Any, data: Any, labels: Sequence[str], chunk_len: int, max_chunks: int) -> tuple[list[list[list[int]]], list[int], int]:
    """Each document as chunks ``[CLS] piece [SEP]``; its label id; how many documents lost chunks past ``max_chunks``.

    Raises:
        ConfigError: sentence pairs (a document is one text).
    """
    from attnkit.training.finetune import encode_classification

    if data.pairs is not None:
        raise ConfigError("data.long reads one text per document; the file holds sentence pairs")
    enc = encode_classification(tok, data, labels, UNLIMITED)
    cls_id, sep_id = enc.ids[0][0], enc.ids[0][-1]
    docs = [chunk_ids(ids, cls_id, sep_id, chunk_len, max_chunks) for ids in enc.ids]
    cut = sum(1 for ids in enc.ids if len(ids) - 2 > chunk_len * max_chunks)
    return docs, list(enc.targets), cut  # type: ignore[arg-type]


class ChunkedClassificationTask:
    """Documents as chunks, shuffled by ``(seed, epoch)``; evaluation reports dev loss and accuracy."""

    def __init__(self, train: tuple[list, list[int]], dev: tuple[list, list[int]] | None, *, batch_size: int,
                 eval_batch_size: int, pad_id: int, device: torch.device | str = "cpu") -> None:
        self.train, self.dev = train, dev
        self.batch_size, self.eval_batch_size, self.pad_id = batch_size, eval_batch_size, pad_id
        self.device = torch.device(device)

    def _batch(self, docs: list, targets: list[int], index: Sequence[int]) -> ChunkBatch:
        ids, mask, n = collate_chunks([docs[i] for i in index], self.pad_id)
        return ChunkBatch(ids, mask, n, torch.tensor([targets[i] for i in index])).to(self.device)

    def batches(self, epoch: int, seed: int) -> Iterator[ChunkBatch]:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.train[0]), generator=g).tolist()
        for i in range(0, len(order), self.batch_size):
            yield self._batch(*self.train, order[i : i + self.batch_size])

    def input_tokens(self, batch: ChunkBatch) -> Tensor:
        return batch.attention_mask.sum()

    def loss(self, model: nn.Module, batch: ChunkBatch) -> tuple[Tensor, Tensor]:
        logits = model(batch.ids, batch.attention_mask, batch.chunks).logits  # (B, L)
        n = (batch.targets != IGNORE).sum()
        return nn.functional.cross_entropy(logits.float(), batch.targets, ignore_index=IGNORE), n

    @torch.no_grad()
    def scores(self, model: nn.Module, docs: list, targets: list[int]) -> dict[str, float]:
        """Mean cross-entropy and accuracy over labelled documents."""
        was = model.training
        model.eval()
        loss, right, count = 0.0, 0, 0
        for i in range(0, len(docs), self.eval_batch_size):
            b = self._batch(docs, targets, range(i, min(i + self.eval_batch_size, len(docs))))
            logits = model(b.ids, b.attention_mask, b.chunks).logits.float()
            keep = b.targets != IGNORE
            loss += float(nn.functional.cross_entropy(logits[keep], b.targets[keep], reduction="sum"))
            right += int((logits.argmax(-1)[keep] == b.targets[keep]).sum())
            count += int(keep.sum())
        model.train(was)
        return {"loss": loss / max(count, 1), "accuracy": right / max(count, 1)}

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return {} if self.dev is None else self.scores(model, *self.dev)


def _memory_note(d: Any) -> str:
    """What a chunk carries to the next, for the log line of :func:`prepare_long`."""
    if d.long == "memory":
        return f", memory of {d.memory_tokens} tokens"
    if d.long == "xl":
        return f", Transformer-XL memory of {f'{d.memory_len} positions' if d.memory_len else 'every earlier chunk'}"
    return ""


def prepare_long(head: nn.Module, tok: Any, train_data: Any, dev_data: Any, labels: Sequence[str], d: Any, t: Any,
                 device: torch.device, max_len: int, log: Any) -> tuple[ChunkedClassifier, ChunkedClassificationTask]:
    """The chunked model around ``head`` and its task, for ``d.long`` in ``average`` / ``memory`` / ``xl``.

    Args:
        head: the fresh classifier on the pretrained encoder.
        tok: the tokenizer.
        train_data: training documents; ``dev_data`` the dev ones (or None).
        labels: label names.
        d: the data config (``long``, ``memory_tokens``, ``memory_len``, ``max_chunks``, ``eval_batch_size``).
        t: the train config (``batch_size``).
        device: where batches go.
        max_len: the encoder's usable positions (a chunk and its two specials fit them).
        log: where to print.
    """
    from attnkit.models.bert_heads import BertClassifier

    if not isinstance(head, BertClassifier):
        raise ConfigError(f"data.long={d.long} reads chunks with a fine-tuned classifier head, not a {type(head).__name__} "
                          "(leave data.features at none)")
    chunk_len = max_len - 2
    train = encode_documents(tok, train_data, labels, chunk_len, d.max_chunks)
    dev = encode_documents(tok, dev_data, labels, chunk_len, d.max_chunks) if dev_data is not None else None
    n_chunks = [len(doc) for doc in train[0]]
    log(f"long documents ({d.long}): chunks of {chunk_len} tokens, {sum(n_chunks) / len(n_chunks):.2f} per training document "
        f"(at most {d.max_chunks}; {train[2]} documents cut)" + _memory_note(d))
    model = ChunkedClassifier.wrap(head, d.long, memory_tokens=d.memory_tokens, chunk_len=chunk_len, max_chunks=d.max_chunks,  # type: ignore[arg-type]
                                   cls_id=getattr(tok, "cls_id", None), memory_len=d.memory_len)
    task = ChunkedClassificationTask(train[:2], dev[:2] if dev is not None else None, batch_size=t.batch_size,
                                     eval_batch_size=d.eval_batch_size, pad_id=tok.pad_id, device=device)
    return model, task


def score_long_test(saved: Any, d: Any, device: torch.device) -> dict[str, Any]:
    """Loss and accuracy of a saved chunked classifier on ``d.test``."""
    from attnkit.data.glue import check_labels, read_classification_tsv
    from attnkit.loading import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(saved)
    model.to(device).eval()
    c = model.config
    labels = list(c.head.labels)
    data = read_classification_tsv(d.test, limit=d.eval_limit or None)
    if data.labels is None:
        raise ConfigError(f"{d.test} has no 'label' column; a test file needs labels")
    check_labels(labels, data)
    docs, targets, _ = encode_documents(tok, data, labels, c.chunk_len, c.max_chunks)
    task = ChunkedClassificationTask((docs, targets), None, batch_size=1, eval_batch_size=d.eval_batch_size,
                                     pad_id=tok.pad_id, device=device)
    return {**task.scores(model, docs, targets), "examples": len(docs)}

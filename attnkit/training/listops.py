"""Long Range Arena ListOps: data splits, batches, the training task and one whole run.

The splits are generated in-process by :mod:`attnkit.data.listops` (LRA sizes: 96,000 /
2,000 / 2,000 examples of 500-2,000 tokens), in parallel processes, and cached as one file of
token ids per data config (``listops-<hash>.pt``, about 120 MB at LRA size) so that a second
run or ``--resume`` does not generate them again.

Batches: examples of similar length are batched together (the shuffled epoch is cut into chunks
of ``bucket_size`` batches, each sorted by length, as fine-tuning does), and each batch is
padded to a multiple of ``pad_to`` tokens: few distinct shapes (compiled kernels are reused) and
lengths that divide block sizes. ``attention_mask`` marks the real tokens.

The run itself (the :class:`~attnkit.training.Trainer`, the best model by validation accuracy,
its test-split score) is :class:`attnkit.runs.listops.ListOpsJob` on the one run path.
"""

from __future__ import annotations

import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import Tensor, nn

from attnkit.config import Config, check
from attnkit.data.batching import bucketed_batches, pad, sorted_batches
from attnkit.data.listops import CLS_ID, PAD_ID, VOCAB_SIZE, ListOpsConfig, generate_encoded
from attnkit.data.transfer import TensorBatch
from attnkit.errors import ConfigError
from attnkit.objectives.classification import classification_loss
from attnkit.training.dev import dev_pass

SPLIT_NAMES = ("train", "validation", "test")

# Kernel parameters for ListOps-length inputs (T <= 2048), per attention kind; ``--set
# model.attention.params.KEY=VALUE`` overrides one. Linformer's ``max_len`` is the model's.
ATTENTION_DEFAULTS: dict[str, dict[str, Any]] = {
    "sliding_window": {"window": 256},
    "dilated_window": {"window": 256, "dilation": 2},
    "global_window": {"window": 256, "global_positions": [0]},
    "strided": {"stride": 64},
    "fixed": {"stride": 64, "c": 8},
    "bigbird": {"block": 64, "random_blocks": 3},
    "lsh": {"n_hashes": 2, "n_buckets": 16, "chunk": 64},
    "routing": {"n_clusters": 8, "chunk": 128},
    "performer": {"n_features": 256},
    "linformer": {"k": 256},
}


MAX_TOKENS = 2 * 10**9  # tokens of all generated sequences together (train + valid + test sizes) x max_len


@dataclass(frozen=True, kw_only=True)
class ListOpsDataConfig(Config):
    """The task's data (defaults: LRA's sizes) and how it is batched.

    ``workers``: processes that generate the data (0: one per CPU core); the data do not
    depend on it. ``pad_to``: batches are padded to a multiple of this many tokens.
    ``bucket_size``: how many batches' worth of examples are sorted by length together.
    """

    train_size: int = 96_000
    valid_size: int = 2_000
    test_size: int = 2_000
    min_len: int = 500
    max_len: int = 2000
    max_depth: int = 10
    max_args: int = 10
    seed: int = 0
    pad_to: int = 128
    bucket_size: int = 50
    eval_batch_size: int = 64
    workers: int = 0

    def validate(self) -> None:
        for name in ("train_size", "valid_size", "test_size", "pad_to", "bucket_size", "eval_batch_size"):
            check(getattr(self, name) >= 1, name, getattr(self, name), "must be >= 1")
        check(self.workers >= 0, "workers", self.workers, "must be >= 0 (0: one per CPU core)")
        check(self.max_depth >= 1, "max_depth", self.max_depth, "must be >= 1")
        check(self.max_args >= 2, "max_args", self.max_args, "must be >= 2")
        check(4 <= self.min_len <= self.max_len, "min_len", self.min_len, f"need 4 <= min_len <= max_len={self.max_len}")
        rows = self.train_size + self.valid_size + self.test_size
        key, value = ("max_len", self.max_len) if self.max_len > 100_000 else ("train_size", self.train_size)
        check(rows * self.max_len <= MAX_TOKENS, key, value,
              f"makes {rows:,} sequences of up to {self.max_len:,} tokens, above the limit of {MAX_TOKENS:,} tokens in memory")

    def generator(self) -> ListOpsConfig:
        return ListOpsConfig(max_depth=self.max_depth, max_args=self.max_args, min_len=self.min_len, max_len=self.max_len)

    def sizes(self) -> dict[str, int]:
        return {"train": self.train_size, "validation": self.valid_size, "test": self.test_size}

    def padded_len(self, cls: bool) -> int:
        """The longest padded row: ``max_len`` (+1 for [CLS]) rounded up to ``pad_to``."""
        return _round_up(self.max_len + int(cls), self.pad_to)

    def cache_key(self) -> str:
        what = {k: getattr(self, k) for k in ("train_size", "valid_size", "test_size", "min_len", "max_len", "max_depth", "max_args", "seed")}
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:12]


def _round_up(n: int, m: int) -> int:
    return -(-n // m) * m


# -- data ------------------------------------------------------------------------------------
@dataclass
class ListOpsSplit:
    """Examples as one flat tensor of token ids: example ``i`` is ``ids[offsets[i]:offsets[i+1]]``."""

    ids: Tensor  # (total tokens,) uint8
    offsets: Tensor  # (N + 1,) int64
    labels: Tensor  # (N,) int64

    def __len__(self) -> int:
        return self.labels.numel()

    def lengths(self) -> list[int]:
        return (self.offsets[1:] - self.offsets[:-1]).tolist()

    @classmethod
    def from_encoded(cls, flat: bytes, lengths: Sequence[int], labels: Sequence[int]) -> "ListOpsSplit":
        offsets = torch.zeros(len(lengths) + 1, dtype=torch.long)
        offsets[1:] = torch.tensor(list(lengths), dtype=torch.long).cumsum(0)
        ids = torch.frombuffer(bytearray(flat), dtype=torch.uint8) if flat else torch.zeros(0, dtype=torch.uint8)
        return cls(ids, offsets, torch.tensor(list(labels), dtype=torch.long))


def make_splits(cfg: ListOpsDataConfig, *, cache_dir: str | Path | None = None, log: Callable[[str], Any] = print) -> dict[str, ListOpsSplit]:
    """The train / validation / test splits of ``cfg``, read from ``cache_dir`` or generated (and saved there)."""
    import os

    path = Path(cache_dir) / f"listops-{cfg.cache_key()}.pt" if cache_dir is not None else None
    if path is not None and path.is_file():
        try:
            saved = torch.load(path, weights_only=True)
            splits = {name: ListOpsSplit(**saved[name]) for name in SPLIT_NAMES}
            log(f"ListOps data read from {path}")
            return splits
        except Exception as e:  # a truncated or foreign file: generate again
            log(f"ignoring unreadable ListOps cache {path} ({type(e).__name__}); generating the data again")
    workers = cfg.workers or os.cpu_count() or 1
    start = time.perf_counter()
    splits = {
        name: ListOpsSplit.from_encoded(*generate_encoded(n, cfg.seed, name, cfg.generator(), workers=workers))
        for name, n in cfg.sizes().items()
    }
    log(f"generated ListOps {' / '.join(f'{len(s):,}' for s in splits.values())} train / validation / test examples "
        f"in {time.perf_counter() - start:.1f}s ({workers} processes)")
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        torch.save({name: {"ids": s.ids, "offsets": s.offsets, "labels": s.labels} for name, s in splits.items()}, tmp)
        tmp.replace(path)
    return splits


@dataclass
class ListOpsBatch(TensorBatch):
    ids: Tensor  # (B, T) int64, PAD_ID after each row's tokens
    attention_mask: Tensor | None  # (B, T) bool, True = real token; None when no row is padded
    labels: Tensor  # (B,)


def collate(split: ListOpsSplit, index: Sequence[int], *, pad_to: int = 1, cls: bool = False) -> ListOpsBatch:
    """Rows ``index`` of ``split`` (``[CLS]`` first if ``cls``), right-padded to a multiple of ``pad_to``."""
    starts, ends = split.offsets[list(index)].tolist(), split.offsets[[i + 1 for i in index]].tolist()
    head = torch.tensor([CLS_ID] if cls else [], dtype=torch.uint8)
    rows = [torch.cat([head, split.ids[s:e]]) for s, e in zip(starts, ends)]
    ids, mask = pad(rows, PAD_ID, multiple=pad_to, return_mask=True)  # (B, T)
    return ListOpsBatch(ids, None if bool(mask.all()) else mask, split.labels[list(index)])


# -- the task (the Trainer's protocol, attnkit.training.tasks) -------------------------------
class ListOpsTask:
    """Sequence classification over ListOps batches; evaluation reports validation loss and accuracy."""

    def __init__(self, train: ListOpsSplit, valid: ListOpsSplit, *, batch_size: int, eval_batch_size: int = 64, pad_to: int = 128,
                 bucket_size: int = 50, cls: bool = False, device: torch.device | str = "cpu") -> None:
        self.train, self.valid = train, valid
        self.batch_size, self.eval_batch_size, self.pad_to, self.bucket_size, self.cls = batch_size, eval_batch_size, pad_to, bucket_size, cls
        self.device = torch.device(device)
        self._lengths = train.lengths()

    def batches(self, epoch: int, seed: int) -> Iterator[ListOpsBatch]:
        for index in bucketed_batches(self._lengths, self.batch_size, bucket_size=self.bucket_size, seed=seed, epoch=epoch):
            yield collate(self.train, index, pad_to=self.pad_to, cls=self.cls).to(self.device)

    def input_tokens(self, batch: ListOpsBatch) -> Tensor | int:
        """The non-padding tokens of the rows (every position where no row is padded)."""
        return batch.ids.numel() if batch.attention_mask is None else batch.attention_mask.sum()

    def loss(self, model: nn.Module, batch: ListOpsBatch) -> tuple[Tensor, Tensor]:
        logits = model(batch.ids, attention_mask=batch.attention_mask).logits  # (B, C)
        return classification_loss(logits, batch.labels)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        return evaluate_split(model, self.valid, batch_size=self.eval_batch_size, pad_to=self.pad_to, cls=self.cls, device=self.device)


def evaluate_split(model: nn.Module, split: ListOpsSplit, *, batch_size: int = 64, pad_to: int = 128, cls: bool = False,
                   device: torch.device | str = "cpu") -> dict[str, float]:
    """Mean cross-entropy and accuracy of ``model`` on ``split`` (batches sorted by length)."""

    def step(index: list[int]) -> tuple[Tensor, Tensor, Tensor]:
        b = collate(split, index, pad_to=pad_to, cls=cls).to(torch.device(device))
        logits = model(b.ids, attention_mask=b.attention_mask).logits.float()  # (B, C)
        loss, n = classification_loss(logits, b.labels)
        return loss, n, (logits.argmax(-1) == b.labels).sum()

    result = dev_pass(step, sorted_batches(split.lengths(), batch_size))
    correct = float(sum(result.outputs)) if result.outputs else 0.0
    return {"loss": result.loss, "accuracy": correct / max(len(split), 1)}


# -- one run -----------------------------------------------------------------------------------
def attention_config(kind: str, model_max_len: int, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"kind", "params"}`` for ``model.attention``: this module's ListOps defaults for ``kind``, updated by ``params``."""
    p = {**ATTENTION_DEFAULTS.get(kind, {}), **(params or {})}
    if kind == "linformer":
        p.setdefault("max_len", model_max_len)
    return {"kind": kind, "params": p}


def check_configs(model_cfg: Any, data_cfg: ListOpsDataConfig) -> None:
    """Raise :class:`ConfigError` where the model cannot take the data."""
    if model_cfg.vocab_size < VOCAB_SIZE:
        raise ConfigError(f"model.vocab_size={model_cfg.vocab_size} is smaller than ListOps' {VOCAB_SIZE} token ids")
    if model_cfg.num_labels != 10:
        raise ConfigError(f"model.num_labels={model_cfg.num_labels}: ListOps has 10 classes")
    if model_cfg.pad_id != PAD_ID:
        raise ConfigError(f"model.pad_id={model_cfg.pad_id}: ListOps pads with id {PAD_ID}")
    need = data_cfg.padded_len(model_cfg.pool == "cls")
    if need > model_cfg.max_len:
        raise ConfigError(f"model.max_len={model_cfg.max_len} is shorter than the longest padded batch ({need} tokens: "
                          f"data.max_len={data_cfg.max_len} rounded up to data.pad_to={data_cfg.pad_to}); raise model.max_len")
    att = model_cfg.attention
    if att.kind == "linformer" and att.params.get("max_len", 4096) < need:
        raise ConfigError(f"model.attention.params.max_len={att.params['max_len']} is shorter than the longest padded batch ({need} tokens)")
    shortest = _round_up(data_cfg.min_len + int(model_cfg.pool == "cls"), data_cfg.pad_to)
    positions = att.params.get("global_positions", ()) if att.kind == "global_window" else ()
    too_far = [p for p in positions if isinstance(p, int) and p >= shortest]
    if too_far:  # the kernel would refuse them only at the first batch that short, mid-run
        raise ConfigError(f"model.attention.params.global_positions={list(positions)}: {too_far} lie beyond the shortest padded "
                          f"batch ({shortest} tokens: data.min_len={data_cfg.min_len} rounded up to data.pad_to={data_cfg.pad_to}); "
                          f"use positions below {shortest}")


def build_model(model_cfg: Any) -> nn.Module:
    """An :class:`EncoderClassifier`; a kernel's refusal of its parameters becomes a one-line :class:`ConfigError`."""
    from attnkit.models.encoder_classifier import EncoderClassifier

    try:
        return EncoderClassifier(model_cfg)
    except ConfigError:
        raise
    except (ValueError, TypeError) as e:
        raise ConfigError(f"model.attention (kind {model_cfg.attention.kind!r}, params {model_cfg.attention.params}): {e}") from None

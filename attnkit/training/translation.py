"""Machine translation on a parallel corpus: data config, training task, decoding and BLEU.

The recipe is that of Vaswani et al. 2017 (sections 5-6): a joint subword vocabulary with
shared embeddings, batches of about ``max_tokens`` tokens grouped by length, label
smoothing, periodic validation, the last checkpoints averaged, and beam search (beam 4,
length penalty 0.6) to translate. BLEU is sacreBLEU's (Post 2018) on detokenized text,
13a tokenization, reported cased and lowercased with its signature.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

import torch
from tokenizers import Tokenizer
from torch import nn

from attnkit.config import Config, check
from attnkit.data.batching import pad
from attnkit.data.parallel import ParallelCorpus, TokenBatches, read_parallel
from attnkit.data.seq2seq import Seq2SeqBatch
from attnkit.data.subword import encode_lines
from attnkit.errors import CheckpointError
from attnkit.metrics import bleu_scores
from attnkit.training.tasks import Seq2SeqTask

TRANSLATION_NAME = "translation.json"  # languages and decoding settings, saved beside the model


@dataclass(frozen=True, kw_only=True)
class TranslationConfig(Config):
    """The corpus, its tokenizer, batching, averaging and decoding of a translation run.

    ``data`` is the corpus directory (``SPLIT.LANG`` files, see :mod:`attnkit.data.parallel`);
    ``max_pairs`` keeps only the first pairs of the training split (``None``: all).
    ``max_tokens`` bounds the padded tokens of a batch on each side (the paper's batches
    hold about 25,000). ``bleu_sentences`` validation sentences are translated at each
    evaluation to report ``bleu`` (0: validation loss only). ``average_last`` checkpoints
    are averaged into the final model (1: the last checkpoint as is). ``test_split`` (if set)
    is translated by the final model and scored once, after training. ``init`` starts from the
    weights, architecture and tokenizer of an encoder-decoder model directory (e.g. ``OUT/model`` of
    ``attnkit train bart``) instead of a fresh model and a tokenizer learned here.
    """

    data: str = ""
    src: str = "de"
    tgt: str = "en"
    train_split: str = "train"
    valid_split: str = "val"
    test_split: str = ""
    max_pairs: int | None = None
    vocab_size: int = 8000
    tokenizer: Literal["bpe", "unigram"] = "bpe"
    max_tokens: int = 8192
    bleu_sentences: int = 200
    beam_size: int = 4
    length_penalty: float = 0.6
    average_last: int = 5
    init: str | None = None

    def validate(self) -> None:
        check(self.vocab_size >= 128, "vocab_size", self.vocab_size, "must be >= 128")
        check(self.max_tokens >= 1, "max_tokens", self.max_tokens, "must be >= 1")
        check(self.bleu_sentences >= 0, "bleu_sentences", self.bleu_sentences, "must be >= 0")
        check(self.beam_size >= 1, "beam_size", self.beam_size, "must be >= 1")
        check(self.length_penalty >= 0, "length_penalty", self.length_penalty, "must be >= 0")
        check(self.average_last >= 1, "average_last", self.average_last, "must be >= 1")
        if self.max_pairs is not None:
            check(self.max_pairs >= 1, "max_pairs", self.max_pairs, "must be >= 1")

    def read(self, split: str, limit: int | None = None) -> ParallelCorpus:
        return read_parallel(self.data, split, self.src, self.tgt, limit=limit)


def encode_pairs(tok: Tokenizer, corpus: ParallelCorpus, max_len: int) -> list[tuple[list[int], list[int]]]:
    """Token ids of each pair, sources cut to ``max_len`` and targets to ``max_len - 1`` (room for BOS/EOS)."""
    src, tgt = encode_lines(tok, corpus.src), encode_lines(tok, corpus.tgt)
    return [(s[:max_len], t[: max_len - 1]) for s, t in zip(src, tgt)]


class TranslationTask(Seq2SeqTask):
    """The training task (see :mod:`attnkit.training.tasks`) for a parallel corpus.

    Args:
        train: training pairs in token-count batches.
        valid: validation pairs (batched by tokens, in a fixed order), or ``None``.
        tokenizer: the joint tokenizer, to translate ``bleu_sources`` and detokenize.
        bleu_sources, bleu_references: validation sentences whose translations give ``bleu``.
        exposure: what the decoder reads in training (:class:`~attnkit.training.exposure.ExposureConfig`).
    """

    def __init__(
        self,
        train: TokenBatches,
        *,
        valid: TokenBatches | None = None,
        tokenizer: Tokenizer | None = None,
        label_smoothing: float = 0.1,
        bleu_sources: list[str] | None = None,
        bleu_references: list[str] | None = None,
        beam_size: int = 4,
        length_penalty: float = 0.6,
        device: torch.device | str = "cpu",
        exposure: Any = None,
    ) -> None:
        super().__init__(train, batch_size=0, label_smoothing=label_smoothing, valid=valid, tokenizer=tokenizer, device=device,
                         exposure=exposure)
        self.bleu_sources, self.bleu_references = bleu_sources or [], bleu_references or []
        self.beam_size, self.length_penalty = beam_size, length_penalty

    def train_batches(self, epoch: int, seed: int) -> Iterator[Seq2SeqBatch]:
        return self.train.batches(epoch=epoch, seed=seed)  # token-count batches

    def valid_batches(self) -> Iterator[Seq2SeqBatch]:
        assert self.valid is not None
        return self.valid.batches(shuffle=False)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        out: dict[str, float] = {}
        if self.valid is not None:
            out["loss"] = self.validation_loss(model)
        if self.bleu_sources and self.tokenizer is not None:
            hyps, _ = translate_lines(
                model, self.tokenizer, self.bleu_sources, beam_size=self.beam_size, length_penalty=self.length_penalty, device=self.device
            )
            out["bleu"] = bleu_scores(hyps, self.bleu_references)["bleu"]
        return out


@torch.no_grad()
def translate_lines(
    model: nn.Module,
    tokenizer: Tokenizer,
    lines: list[str],
    *,
    beam_size: int = 4,
    length_penalty: float = 0.6,
    batch_size: int = 128,
    use_cache: bool = True,
    device: torch.device | str | None = None,
) -> tuple[list[str], int]:
    """Translate ``lines`` with batched, KV-cached beam search (greedy for ``beam_size=1``).

    Sentences are decoded in batches of similar length and returned in input order.
    An empty (or all-whitespace) line gives an empty translation without being decoded.
    A source longer than the model's ``max_len`` tokens is cut to ``max_len``.

    Returns:
        The detokenized translations, and how many inputs were truncated.
    """
    from attnkit.generation import beam_search, greedy_decode

    c = model.config
    device = torch.device(device) if device is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    ids = encode_lines(tokenizer, [line if line.strip() else "" for line in lines])
    truncated = sum(len(x) > c.max_len for x in ids)
    ids = [x[: c.max_len] for x in ids]
    todo = sorted((i for i, x in enumerate(ids) if x), key=lambda i: len(ids[i]), reverse=True)
    outputs = [""] * len(lines)
    for start in range(0, len(todo), batch_size):
        chunk = todo[start : start + batch_size]
        src = pad([ids[i] for i in chunk], c.pad_id).to(device)  # (B, Ts)
        if beam_size > 1:
            out = beam_search(model, src, beam_size=beam_size, length_penalty=length_penalty, use_cache=use_cache)
        else:
            out = greedy_decode(model, src, use_cache=use_cache)
        rows = [[t for t in row if t != c.pad_id] for row in out.tolist()]  # (B, T_out) -> token lists
        for i, text in zip(chunk, tokenizer.decode_batch(rows)):
            outputs[i] = text
    model.train(was_training)
    return outputs, truncated


def save_translation_info(model_dir: Path, cfg: TranslationConfig) -> None:
    """Record the language pair and decoding settings beside a model (read by ``attnkit translate``)."""
    info = {"src": cfg.src, "tgt": cfg.tgt, "beam_size": cfg.beam_size, "length_penalty": cfg.length_penalty}
    (Path(model_dir) / TRANSLATION_NAME).write_text(json.dumps(info, indent=2) + "\n")


def load_translation_info(model_dir: str | os.PathLike) -> dict[str, Any]:
    """The settings :func:`save_translation_info` wrote, or ``{}`` if there are none."""
    path = Path(model_dir) / TRANSLATION_NAME
    if not path.is_file():
        return {}
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise CheckpointError(f"{path} is not valid JSON ({e.msg}); the file is corrupt") from None
    return info if isinstance(info, dict) else {}


def check_recipe(train_cfg: Any, data_cfg: TranslationConfig) -> None:
    """Raise a :class:`ConfigError` if the checkpoints written cannot be averaged as asked."""
    from attnkit.errors import ConfigError

    k = data_cfg.average_last
    if k > 1 and train_cfg.save_every == 0:
        raise ConfigError(f"data.average_last={k} needs train.save_every > 0 (checkpoints to average); set it, or data.average_last=1")
    if k > 1 and 0 < train_cfg.keep_checkpoints < k:
        raise ConfigError(f"data.average_last={k} needs train.keep_checkpoints >= {k} (got {train_cfg.keep_checkpoints})")


def prepare_tokenizer(data_cfg: TranslationConfig, train: ParallelCorpus, out: Path, *, reuse: bool) -> Tokenizer:
    """Load ``out/tokenizer.json`` when ``reuse`` and it exists; otherwise learn it from ``train`` and save it there."""
    from attnkit.data.subword import train_subword_tokenizer
    from attnkit.data.tokenizer import load_tokenizer

    path = out / "tokenizer.json"
    if reuse and path.is_file():
        return load_tokenizer(path)
    tok = train_subword_tokenizer(train.src + train.tgt, data_cfg.vocab_size, data_cfg.tokenizer, what="data.vocab_size")
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(path))
    return tok

"""A DialoGPT-style dialogue model (Zhang et al. 2020): data config, training task and chat.

A decoder-only GPT reads the dialogue history as one sequence of turns, each opened by a
speaker-segment token and closed by ``<eot>`` (:mod:`attnkit.data.dialogue`), and learns to
predict the responses: the loss counts the text and ``<eot>`` of every turn after the first of
each example (Zhang et al. 2020, section 2: the response conditioned on the history). To reply,
:class:`Chat` keeps the most recent whole turns that fit the context with room for the reply,
appends the reply's segment token and samples until ``<eot>`` with the sampling settings of
:mod:`attnkit.generation.sampling` (top-k, top-p, temperature, repetition penalty, no-repeat
n-grams: the repetition DialoGPT's users meet).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, Literal

import torch
from torch import Tensor, nn

from attnkit.config import Config, check
from attnkit.data.dialogue import DIALOGUE_SPECIALS, DialogueBatch, DialogueTokens, collate, turn_sequence, truncate_history
from attnkit.data.tokenizer import SPECIALS
from attnkit.objectives.causal_lm import causal_lm_loss
from attnkit.training.dev import dev_pass


@dataclass(frozen=True, kw_only=True)
class DialogueDataConfig(Config):
    """The dialogues a model learns from.

    ``text`` is a UTF-8 file in the ``format`` ``lines`` (one turn per line, a blank line between
    dialogues, optional ``SPEAKER:`` prefixes) or ``play`` (``SPEAKER:`` on its own line, the
    speech below, a blank line between turns: tiny Shakespeare). ``max_turns`` reads only the
    first turns (null: all). ``tokenizer`` is ``char`` or a byte-level ``bpe`` of ``vocab_size``
    tokens learned from the turns, plus the dialogue tokens. The last ``valid_fraction`` of the
    examples validate.
    """

    text: str = ""
    format: Literal["lines", "play"] = "lines"
    max_turns: int | None = None
    tokenizer: Literal["char", "bpe"] = "char"
    vocab_size: int = 4096
    valid_fraction: float = 0.1

    def validate(self) -> None:
        check(0.0 < self.valid_fraction < 1.0, "valid_fraction", self.valid_fraction, "must be in (0, 1)")
        check(self.vocab_size >= 260, "vocab_size", self.vocab_size, "must be >= 260 (256 bytes plus specials)")
        if self.max_turns is not None:
            check(self.max_turns >= 2, "max_turns", self.max_turns, "must be >= 2 (a history and a response)")


def dialogue_tokenizer(texts: list[str], kind: str, vocab_size: int) -> Any:
    """:func:`~attnkit.data.text.text_tokenizer` over the turns' text, plus ``<eot>`` and the segment tokens."""
    from attnkit.data.text import text_tokenizer

    tok = text_tokenizer("\n".join(texts), kind, vocab_size)  # type: ignore[arg-type]
    tok.add_special_tokens(list(DIALOGUE_SPECIALS))
    return tok


class DialogueTask:
    """Next-token loss on the responses of dialogue windows (a task for :class:`~attnkit.training.Trainer`).

    Args:
        train, valid: ``(input ids, targets)`` examples, targets -100 outside the responses.
        batch_size: examples per batch (padded to the longest).
        pad_id: the padding id of the inputs.
    """

    varying_lengths = True

    def __init__(self, train: list[tuple[list[int], list[int]]], valid: list[tuple[list[int], list[int]]], *, batch_size: int,
                 pad_id: int, device: torch.device | str = "cpu") -> None:
        self.train, self.valid, self.batch_size, self.pad_id = train, valid, batch_size, pad_id
        self.device = torch.device(device)

    def batches(self, epoch: int, seed: int) -> Iterator[DialogueBatch]:
        g = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.train), generator=g).tolist()
        for i in range(0, len(order), self.batch_size):
            yield collate([self.train[j] for j in order[i : i + self.batch_size]], self.pad_id).to(self.device)

    def input_tokens(self, batch: DialogueBatch) -> Tensor:
        return (batch.ids != self.pad_id).sum()

    def loss(self, model: nn.Module, batch: DialogueBatch) -> tuple[Tensor, Tensor]:
        logits = model(batch.ids).logits  # (B, T, V); right padding comes after every real token
        return causal_lm_loss(logits, batch.targets)

    def evaluate(self, model: nn.Module) -> dict[str, float]:
        chunks = (collate(self.valid[i : i + self.batch_size], self.pad_id).to(self.device) for i in range(0, len(self.valid), self.batch_size))
        return {"loss": dev_pass(lambda b: self.loss(model, b), chunks).loss}


class Chat:
    """A conversation with a trained dialogue model: :meth:`reply` adds the user's turn and the model's.

    Args:
        model: the GPT of a dialogue run.
        tokenizer: its tokenizer (with the dialogue tokens).
        sampling: a :class:`~attnkit.generation.sampling.SamplingConfig` (its ``eos_id`` is set to ``<eot>``).
        max_turns: keep at most this many turns of history (null: as many as fit the context).
    """

    def __init__(self, model: nn.Module, tokenizer: Any, sampling: Any, *, max_turns: int | None = None) -> None:
        import dataclasses

        self.model, self.tokenizer, self.max_turns = model, tokenizer, max_turns
        self.special = DialogueTokens.of(tokenizer)
        context = model.config.context
        new = max(1, min(sampling.max_new_tokens, context // 2))
        self.sampling = dataclasses.replace(sampling, eos_id=self.special.eot, max_new_tokens=new)
        self.budget = context - new  # tokens of history and the reply's segment token
        self.history: list[list[int]] = []

    def encode(self, text: str) -> list[int]:
        """Token ids of a turn's text; characters outside a character-level vocabulary are dropped."""
        from attnkit.data.text import is_char_level

        if is_char_level(self.tokenizer):
            vocab = self.tokenizer.get_vocab()
            specials = set(DIALOGUE_SPECIALS)
            return [vocab[ch] for ch in text if ch in vocab and ch not in specials]
        return self.tokenizer.encode(text).ids

    def prompt(self) -> list[int]:
        """The model's input for the next reply: the kept history and the reply's segment token."""
        kept = truncate_history(self.history, self.budget, self.max_turns)
        return turn_sequence(kept, self.special, respond=True)[0]

    def reply(self, text: str) -> str:
        """Add the user's turn ``text``, generate the model's, add it to the history and return its text."""
        from attnkit.generation.sampling import generate

        self.history.append(self.encode(text.strip()))
        out = generate(self.model, [self.prompt()], self.sampling)  # type: ignore[arg-type]
        drop = {*self.special.segments, self.special.eot, *range(len(SPECIALS))}  # a stray <pad>, <s>, </s> or <unk> is not text
        tokens = [t for t in out.tokens[0] if t not in drop]
        self.history.append(tokens)
        return self.tokenizer.decode(tokens).strip()

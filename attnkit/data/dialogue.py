"""Multi-turn dialogues for a DialoGPT-style model (Zhang et al. 2020, section 2).

A dialogue is a list of turns; the model reads the whole history as one token sequence
``[seg] turn_1 [eot] [seg] turn_2 [eot] ...``: each turn starts with a speaker-segment token
(``<spk0>`` / ``<spk1>``, alternating from the first turn of the sequence, as the two dialogue
states of TransferTransfo, Wolf et al. 2019) and ends with the end-of-turn token ``<eot>`` (as
DialoGPT ends each turn with ``<|endoftext|>``). A turn with a speaker keeps ``SPEAKER: `` in its
text, so the model sees who speaks.

Two file formats:

* ``lines``: one turn per line, a blank line between dialogues, an optional ``SPEAKER:`` prefix;
* ``play``: ``SPEAKER:`` on a line of its own, the speech on the lines below, a blank line
  between turns (tiny Shakespeare); the whole file is one dialogue.

Training examples are windows of whole consecutive turns that fit the context (a turn longer
than half the context is cut to its beginning); each window after the first of a dialogue starts
at the last turn of the one before, so every turn but a
dialogue's first is predicted once with at least one turn of history. The loss is on the
responses only: the text and ``<eot>`` of every turn after the window's first, never on a
segment token or on the history's first turn (:func:`response_mask`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Iterator

import torch
from torch import Tensor

from attnkit.errors import DataError

EOT, SEGMENTS = "<eot>", ("<spk0>", "<spk1>")
DIALOGUE_SPECIALS = (EOT, *SEGMENTS)
SPEAKER = re.compile(r"^([A-Za-z][\w .'-]{0,40}):\s*(.*)$")


@dataclass(frozen=True)
class Turn:
    """One turn: its speaker (None when unnamed) and its text."""

    speaker: str | None
    text: str

    def render(self) -> str:
        return f"{self.speaker}: {self.text}" if self.speaker else self.text


def parse_turn(line: str) -> Turn:
    """``"NAME: text"`` -> ``Turn("NAME", "text")``; a line without the prefix has no speaker."""
    m = SPEAKER.match(line.strip())
    if m and m.group(2):
        return Turn(m.group(1).strip(), m.group(2).strip())
    return Turn(None, line.strip())


def read_dialogues(text: str, fmt: str = "lines") -> list[list[Turn]]:
    """The dialogues of a file's ``text`` in the ``lines`` or ``play`` format (see the module docstring).

    Raises:
        DataError: no turn was found, or the format is unknown.
    """
    blocks = re.split(r"\n\s*\n", text.replace("\r\n", "\n"))
    if fmt == "lines":
        dialogues = [[parse_turn(line) for line in block.splitlines() if line.strip()] for block in blocks]
    elif fmt == "play":
        turns = []
        for block in blocks:
            lines = [line.strip() for line in block.splitlines() if line.strip()]
            if not lines:
                continue
            head = SPEAKER.match(lines[0])
            if head and not head.group(2) and len(lines) > 1:  # "NAME:" alone, then the speech
                turns.append(Turn(head.group(1).strip(), " ".join(lines[1:])))
            else:
                turns.append(parse_turn(" ".join(lines)))
        dialogues = [turns]
    else:
        raise DataError(f"unknown dialogue format {fmt!r}; use lines or play")
    dialogues = [d for d in dialogues if d]
    if not dialogues:
        raise DataError("no dialogue turns found: the file is empty")
    return dialogues


@dataclass(frozen=True)
class DialogueTokens:
    """The special token ids of a dialogue model's tokenizer."""

    eot: int
    segments: tuple[int, int]

    @classmethod
    def of(cls, tokenizer: object) -> "DialogueTokens":
        ids = [tokenizer.token_to_id(s) for s in DIALOGUE_SPECIALS]  # type: ignore[attr-defined]
        if any(i is None for i in ids):
            raise DataError(f"the tokenizer lacks the dialogue tokens {', '.join(DIALOGUE_SPECIALS)}; it is not a dialogue model's")
        return cls(eot=ids[0], segments=(ids[1], ids[2]))


def turn_sequence(turns: list[list[int]], special: DialogueTokens, *, respond: bool = False) -> tuple[list[int], list[bool]]:
    """Join encoded turns into ``[seg] turn [eot] ...``; also a flag per token: part of a response.

    Args:
        turns: each turn's text ids (no specials).
        special: the dialogue token ids.
        respond: append the next turn's segment token (the prompt of a reply).

    Returns:
        The ids, and for each one whether it is the text or ``<eot>`` of a turn after the first.
    """
    ids: list[int] = []
    response: list[bool] = []
    for i, turn in enumerate(turns):
        ids.append(special.segments[i % 2])
        response.append(False)
        ids.extend(turn)
        ids.append(special.eot)
        response.extend([i > 0] * (len(turn) + 1))
    if respond:
        ids.append(special.segments[len(turns) % 2])
        response.append(False)
    return ids, response


def response_mask(response: list[bool]) -> list[bool]:
    """The targets to score in next-token prediction: target ``t`` (token ``t + 1``) where that token is a response's."""
    return response[1:]


def windows(turns: list[list[int]], context: int) -> Iterator[list[list[int]]]:
    """Windows of whole consecutive turns whose :func:`turn_sequence` fits ``context + 1`` tokens
    (inputs and shifted targets of ``context`` each); each starts at the last turn of the one
    before. A turn is cut to its first ``(context + 1) // 2 - 2`` tokens, so that any two turns
    fit together and every window has a history and a response."""
    cap = (context + 1) // 2 - 2  # any two turns fit together: 2 x (cap + 2) <= context + 1
    turns = [t[:cap] for t in turns]
    start = 0
    while start < len(turns) - 1:
        end, size = start, 0
        while end < len(turns) and size + len(turns[end]) + 2 <= context + 1:
            size += len(turns[end]) + 2
            end += 1
        yield turns[start:end]
        if end >= len(turns):
            return
        start = end - 1


def truncate_history(turns: list[list[int]], budget: int, max_turns: int | None = None) -> list[list[int]]:
    """The most recent whole turns whose sequence (with the reply's segment token) fits ``budget`` tokens.

    Each turn costs its length plus 2 (segment and ``<eot>``); the reply's segment token 1 more.
    ``max_turns`` keeps at most that many turns. When even the newest turn alone does not fit, its
    last tokens are kept (the only case where a turn is cut).

    Returns:
        The kept turns, oldest first.
    """
    kept: list[list[int]] = []
    used = 1
    for turn in reversed(turns):
        if max_turns is not None and len(kept) >= max_turns:
            break
        if used + len(turn) + 2 > budget:
            if not kept:
                room = max(budget - used - 2, 0)
                kept.append(turn[len(turn) - room :] if room else [])
            break
        kept.append(turn)
        used += len(turn) + 2
    return kept[::-1]


@dataclass
class DialogueBatch:
    """Right-padded inputs and targets; ``targets`` is -100 where no loss is taken."""

    ids: Tensor  # (B, T)
    targets: Tensor  # (B, T)

    def to(self, device: torch.device | str) -> "DialogueBatch":
        return DialogueBatch(self.ids.to(device), self.targets.to(device))


def make_example(turns: list[list[int]], special: DialogueTokens) -> tuple[list[int], list[int]]:
    """Inputs and targets (-100 outside the responses) of one window of turns."""
    ids, response = turn_sequence(turns, special)
    keep = response_mask(response)
    targets = [t if k else -100 for t, k in zip(ids[1:], keep)]
    return ids[:-1], targets


def collate(examples: list[tuple[list[int], list[int]]], pad_id: int) -> DialogueBatch:
    """Pad inputs with ``pad_id`` and targets with -100 to the longest example."""
    t = max(len(x) for x, _ in examples)
    ids = torch.full((len(examples), t), pad_id, dtype=torch.long)
    targets = torch.full((len(examples), t), -100, dtype=torch.long)
    for i, (x, y) in enumerate(examples):
        ids[i, : len(x)] = torch.tensor(x)
        targets[i, : len(y)] = torch.tensor(y)
    return DialogueBatch(ids, targets)

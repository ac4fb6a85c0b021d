"""Shared fixtures of the position tests."""

from __future__ import annotations

import pytest

from attnkit.attention import flex


@pytest.fixture
def flex_answers(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """One entry per call of ``flex.positional`` from here on, True where FlexAttention answered (not None)."""
    answers: list[bool] = []
    positional = flex.positional

    def counted(*args, **kwargs):  # type: ignore[no-untyped-def]
        out = positional(*args, **kwargs)
        answers.append(out is not None)
        return out

    monkeypatch.setattr(flex, "positional", counted)
    return answers

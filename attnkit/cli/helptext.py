"""Docstrings turned into plain text for the terminal.

Module docstrings double as ``--help`` descriptions; they are written for Sphinx-style readers
(double-backtick literals, ``:mod:``/``:func:`` roles). :func:`plain` removes that markup so a
help page reads as ordinary text.
"""

from __future__ import annotations

import re

_ROLE = re.compile(r":(?:py:)?(?:mod|func|class|meth|attr|data|obj|exc|ref|doc|term):`(~?)([^`]*)`")
_LITERAL = re.compile(r"``(.+?)``", re.S)
_INTERPRETED = re.compile(r"(?<![`\w])`([^`\n]+)`(?![`\w])")


def _role(match: re.Match[str]) -> str:
    short, target = match.group(1), match.group(2)
    if "<" in target and target.endswith(">"):  # :func:`title <target>`: keep the title
        return target[: target.index("<")].rstrip()
    return target.rsplit(".", 1)[-1] if short else target


def plain(text: str) -> str:
    """``text`` without reStructuredText inline markup.

    Roles (``:mod:`x```, ``:func:`~a.b```) become their target (the last component for ``~``),
    double-backtick literals and single-backtick interpreted text lose their backticks. Line
    breaks and indentation are kept, so examples stay where they were.

    Args:
        text: a docstring or help string.

    Returns:
        The same text with the markup removed.
    """
    text = _ROLE.sub(_role, text)
    text = _LITERAL.sub(r"\1", text)
    return _INTERPRETED.sub(r"\1", text)


__all__ = ["plain"]

"""Help pages of the non-training commands: plain text, one page per subcommand, every flag with help."""

from __future__ import annotations

import argparse

import pytest

from attnkit.cli.helptext import plain
from attnkit.cli.main import build_parser, main

COMMANDS = [
    ("eval",), ("eval", "translate"), ("eval", "classify"), ("eval", "ner"), ("bench",), ("bench", "attention"), ("convert",),
    ("average",), ("info",), ("generate",), ("predict",), ("tokenizer",), ("tokenizer", "train"), ("translate",),
]
MARKUP = ("``", ":mod:", ":func:", ":class:", ":meth:", ":data:", ":attr:")


def subparser(path: tuple[str, ...]) -> argparse.ArgumentParser:
    parser = build_parser()
    for name in path:
        (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        parser = sub.choices[name]
    return parser


def own_flags(parser: argparse.ArgumentParser) -> list[str]:
    return [a.option_strings[-1] if a.option_strings[-1].startswith("--") else a.option_strings[0]
            for a in parser._actions if a.option_strings and a.dest != "help"]


def help_page(capsys, path: tuple[str, ...]) -> str:
    with pytest.raises(SystemExit) as e:
        main([*path, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_help_page_is_plain_and_names_its_own_flags(path, capsys) -> None:
    page = help_page(capsys, path)
    assert page.startswith(f"usage: attnkit {' '.join(path)}")
    assert not [m for m in MARKUP if m in page], page
    parser = subparser(path)
    for flag in own_flags(parser):
        assert flag in page, (flag, page)
    for action in parser._actions:
        if action.dest != "help" and not isinstance(action, argparse._SubParsersAction):
            assert action.help, f"{' '.join(path)}: {action.option_strings or action.dest} has no help"


def test_eval_tasks_have_their_own_pages(capsys) -> None:
    """eval translate, classify and ner: each its own description and flags, none of the others'."""
    translate, classify, ner = (help_page(capsys, ("eval", t)) for t in ("translate", "classify", "ner"))
    assert "BLEU" in translate and "--beam" in translate and "--src" in translate and "--max-len" not in translate
    for page, what in ((classify, "accuracy"), (ner, "precision, recall and F1")):
        assert what in page and "--max-len" in page
        assert "--beam" not in page and "--src" not in page and "--split" not in page
    assert classify != ner


def test_translate_flags_are_refused_by_eval_classify(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["eval", "classify", "--model", "m", "--data", "d", "--beam", "4"])
    assert e.value.code == 2 and "--beam" in capsys.readouterr().err


@pytest.mark.parametrize("text,expected", [
    ("``attnkit eval``: see :mod:`attnkit.cli.evaluate_labelled`", "attnkit eval: see attnkit.cli.evaluate_labelled"),
    (":func:`~attnkit.evaluation.labelled_logits` and :class:`attnkit.models.GPT`", "labelled_logits and attnkit.models.GPT"),
    ("a `literal` and :meth:`title <attnkit.x.y>`", "a literal and title"),
    ("    attnkit eval ner --data x.conll   # F1\n``--set k=v``", "    attnkit eval ner --data x.conll   # F1\n--set k=v"),
    ("don't touch it's 'quotes'", "don't touch it's 'quotes'"),
])
def test_plain_removes_markup(text: str, expected: str) -> None:
    assert plain(text) == expected

"""The unlabelled text of a SQuAD file for masked-LM stages: documents, held-out articles, and the leak guard."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from attnkit.data.squad_text import squad_documents
from attnkit.errors import ConfigError, DataError
from attnkit.runs.mlm import MLMDataConfig, read_text
from attnkit.runs.mlm_qa import MLMQADataConfig, check_no_leak


def article(n: int) -> dict:
    """Article ``n``: two paragraphs, each with a question and one whose answer does not match (kept: one is usable)."""
    paragraphs = []
    for p in range(2):
        context = f"Article {n} para {p} opens.  It goes on!\nDoes it end? Yes it does"
        paragraphs.append({"context": context, "qas": [
            {"id": f"{n}-{p}-a", "question": f"What  opens in {n} {p}?", "answers": [{"text": "opens", "answer_start": context.index("opens")}]},
            {"id": f"{n}-{p}-b", "question": f"Bad {n} {p}?", "answers": [{"text": "nowhere", "answer_start": 0}]},
        ]})
    return {"title": f"t{n}", "paragraphs": paragraphs}


@pytest.fixture
def squad(tmp_path: Path) -> Path:
    path = tmp_path / "squad.json"
    path.write_text(json.dumps({"version": "1.1", "data": [article(n) for n in range(4)]}))
    return path


def expected(n: int, p: int, questions: bool) -> list[str]:
    """Written from the format: the context's four sentences, then the one usable question (white space collapsed)."""
    out = [f"Article {n} para {p} opens.", "It goes on!", "Does it end?", "Yes it does"]
    return out + [f"What opens in {n} {p}?"] if questions else out


def test_one_document_per_paragraph_sentences_then_questions(squad):
    assert squad_documents(squad) == [expected(n, p, True) for n in range(4) for p in range(2)]
    assert squad_documents(squad, questions=False) == [expected(n, p, False) for n in range(4) for p in range(2)]


def test_held_out_articles_never_enter_the_text(squad):
    from attnkit.data.squad import split_articles

    docs = squad_documents(squad, heldout_articles=3)
    assert docs == [expected(0, p, True) for p in range(2)]
    _, dev = split_articles(squad, 3)  # what a split_articles=3 run evaluates on
    text = "\n".join(s for d in docs for s in d)
    for e in dev.examples:
        assert e.question not in text and e.context.split(".")[0] not in text


def test_bad_input_is_one_data_error(squad, tmp_path):
    with pytest.raises(DataError, match="4 articles"):
        squad_documents(squad, heldout_articles=4)
    (tmp_path / "bad.json").write_text('{"data": [{"title": "x"}]}')
    with pytest.raises(DataError, match="paragraphs"):
        squad_documents(tmp_path / "bad.json")
    with pytest.raises(DataError, match="does not exist"):
        squad_documents(tmp_path / "missing.json")


def test_train_mlm_reads_a_json_text_file_as_squad(squad, tmp_path):
    plain = tmp_path / "plain.txt"
    plain.write_text("One line.\nTwo line.\n")
    d = MLMDataConfig(text=(str(squad), str(plain)), squad_questions=False, squad_heldout_articles=2)
    assert read_text(d) == [expected(n, p, False) for n in range(2) for p in range(2)] + [["One line.", "Two line."]]
    with pytest.raises(ConfigError, match="squad_heldout_articles"):
        MLMDataConfig(text=(str(squad),), squad_heldout_articles=-1)


def stage_run(tmp_path: Path, text: list[str], held: int) -> Path:
    """A directory laid out as ``attnkit train mlm`` leaves it: run_config.json beside model/."""
    where = tmp_path / f"stage-{held}"
    (where / "model").mkdir(parents=True)
    (where / "run_config.json").write_text(json.dumps({"task": "mlm", "data": {"text": text, "squad_heldout_articles": held}}))
    return where / "model"


def test_mlm_qa_refuses_a_stage_that_read_its_evaluation_articles(squad, tmp_path):
    qa = MLMQADataConfig(model="m", data=str(squad), split_articles=2)
    check_no_leak(qa, stage_run(tmp_path, [str(squad)], 2))  # held out exactly the evaluation articles
    check_no_leak(qa, stage_run(tmp_path, [str(squad)], 3))
    with pytest.raises(ConfigError, match="squad_heldout_articles=2"):
        check_no_leak(qa, stage_run(tmp_path, [str(squad)], 1))
    with pytest.raises(ConfigError, match="evaluation file"):
        check_no_leak(MLMQADataConfig(model="m", train="x.json", dev=str(squad)), stage_run(tmp_path, [str(squad)], 0))
    check_no_leak(qa, tmp_path / "nowhere")  # not a stage run: nothing to check


def test_xquad_mlm_qa_stage_holds_out_the_articles_it_evaluates():
    from attnkit import recipes

    qa = recipes.get("xquad-mlm-qa")
    [stage] = qa.before
    mlm = recipes.get(stage.recipe)
    assert stage.feeds == "data.model" and mlm.task == "mlm"
    assert mlm.data.text == (qa.data.data,) and mlm.data.squad_heldout_articles == qa.data.split_articles > 0

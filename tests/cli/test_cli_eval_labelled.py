"""``attnkit eval classify|ner``: scores agree with ``attnkit predict`` output scored independently (seqeval for entities)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from test_cli_finetune import FAST, root, run_cli, write_tsv  # noqa: F401  (root: the module's data and tiny BERT)


@pytest.fixture(scope="module")
def trained(root, tmp_path_factory) -> dict[str, Path]:  # noqa: F811
    out = tmp_path_factory.mktemp("eval")
    from attnkit.cli.main import main

    assert main(["finetune", "classify", "--model", str(root / "tiny"), "--train", str(root / "train.tsv"), "--dev", str(root / "dev.tsv"),
                 "--out", str(out / "clf"), "--epochs", "3", *FAST, "--set", "train.optim.lr=2e-3", "--set", "train.batch_size=16"]) == 0
    assert main(["finetune", "ner", "--model", str(root / "tiny"), "--train", str(root / "train.conll"), "--dev", str(root / "dev.conll"),
                 "--out", str(out / "ner"), "--epochs", "4", *FAST, "--set", "train.optim.lr=3e-3", "--set", "train.batch_size=16"]) == 0
    return {"clf": out / "clf" / "model", "ner": out / "ner" / "model"}


def test_classify_accuracy_matches_predict(root, trained, capsys, tmp_path):  # noqa: F811
    code, out, err = run_cli(capsys, "eval", "classify", "--model", trained["clf"], "--data", root / "dev.tsv", "--device", "cpu", "--json")
    assert code == 0, err
    record = json.loads(out)
    rows = [line.split("\t") for line in (root / "dev.tsv").read_text().splitlines()[1:]]
    (tmp_path / "in.txt").write_text("".join(s + "\n" for s, _ in rows))
    code, out, err = run_cli(capsys, "predict", "--model", trained["clf"], tmp_path / "in.txt", "--device", "cpu")
    assert code == 0, err
    predicted = out.split()
    assert record["examples"] == len(rows) == len(predicted)
    assert record["accuracy"] == pytest.approx(sum(p == y for p, (_, y) in zip(predicted, rows)) / len(rows), abs=1e-12)
    code, out, _ = run_cli(capsys, "eval", "classify", "--model", trained["clf"], "--data", root / "dev.tsv", "--device", "cpu")
    assert code == 0 and f"accuracy = {100 * record['accuracy']:.2f}" in out


def test_ner_scores_match_seqeval(root, trained, capsys):  # noqa: F811
    seqeval = pytest.importorskip("seqeval.metrics")
    code, out, err = run_cli(capsys, "eval", "ner", "--model", trained["ner"], "--data", root / "dev.conll", "--device", "cpu", "--json")
    assert code == 0, err
    record = json.loads(out)
    code, out, err = run_cli(capsys, "predict", "--model", trained["ner"], "--conll", root / "dev.conll", "--device", "cpu")
    assert code == 0, err
    blocks = lambda text: [[line.split("\t") for line in b.splitlines()] for b in text.strip().split("\n\n")]  # noqa: E731
    gold = [[t for _, t in s] for s in blocks((root / "dev.conll").read_text())]
    pred = [[t for _, t in s] for s in blocks(out)]
    assert record["f1"] == pytest.approx(seqeval.f1_score(gold, pred), abs=1e-9)
    assert record["precision"] == pytest.approx(seqeval.precision_score(gold, pred), abs=1e-9)
    assert record["recall"] == pytest.approx(seqeval.recall_score(gold, pred), abs=1e-9)
    assert record["f1"] > 0.0 and record["entities"] > 0  # four epochs: a tagger that finds entities


def test_eval_errors_are_one_line(root, trained, capsys, tmp_path):  # noqa: F811
    write_tsv(tmp_path / "odd.tsv", [("good", "positive"), ("meh", "neutral")])
    (tmp_path / "nolabel.tsv").write_text("sentence\nthe movie\n")
    cases = [
        (("classify", trained["clf"], tmp_path / "odd.tsv"), "'neutral'"),
        (("classify", trained["clf"], tmp_path / "nolabel.tsv"), "no 'label' column"),
        (("classify", trained["clf"], tmp_path), "is not a file"),
        (("ner", trained["clf"], root / "dev.conll"), "needs a tagger"),
        (("classify", trained["ner"], root / "dev.tsv"), "needs a classifier"),
    ]
    for (task, model, data), message in cases:
        code, _, err = run_cli(capsys, "eval", task, "--model", model, "--data", data, "--device", "cpu")
        assert code == 2 and message in err and len(err.strip().splitlines()) == 1, (task, data, err)
    with pytest.raises(SystemExit) as e:  # a translation flag is not on eval classify's page
        run_cli(capsys, "eval", "classify", "--model", trained["clf"], "--data", root / "dev.tsv", "--beam", "4")
    assert e.value.code == 2 and "unrecognized arguments: --beam" in capsys.readouterr().err

"""``attnkit finetune classify --set data.long=memory|average``: documents past the positions, end to end."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

import attnkit
from attnkit.cli.main import main
from attnkit.data.wordpiece import SPECIAL_TOKENS, WordPieceTokenizer
from attnkit.models.bert import BertModel, bert_preset
from attnkit.models.chunked import ChunkedClassifier

FILLER = [f"w{i}" for i in range(10)]


@pytest.fixture(scope="module")
def long_docs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Documents of 30 words (past a 16-position encoder): label yes iff the first and the last word are both 'a'."""
    root = tmp_path_factory.mktemp("long")
    rng = random.Random(0)
    for name, n in (("train", 48), ("dev", 16)):
        rows = []
        for _ in range(n):
            f, last = rng.choice("ab"), rng.choice("ab")
            rows.append(f"{' '.join([f, *rng.choices(FILLER, k=28), last])}\t{'yes' if f == last == 'a' else 'no'}\n")
        (root / f"{name}.tsv").write_text("sentence\tlabel\n" + "".join(rows))
    (root / "vocab.txt").write_text("\n".join([*SPECIAL_TOKENS, "a", "b", *FILLER]) + "\n")
    tok = WordPieceTokenizer.from_vocab(root / "vocab.txt")
    torch.manual_seed(0)
    BertModel(bert_preset("bert-test", vocab_size=tok.vocab_size, max_positions=16)).save_pretrained(root / "bert", tokenizer=tok)
    return root


@pytest.mark.parametrize("mode", ["memory", "average", "xl"])
def test_finetune_classify_long_documents(mode: str, long_docs: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / mode
    code = main(["finetune", "classify", "--model", str(long_docs / "bert"), "--train", str(long_docs / "train.tsv"),
                 "--dev", str(long_docs / "dev.tsv"), "--out", str(out), "--no-progress", "--set", "train.device=cpu",
                 "--set", f"data.long={mode}", "--set", "data.memory_tokens=2", "--set", f"data.test={long_docs / 'dev.tsv'}",
                 "--set", "train.steps=4", "--set", "train.batch_size=16"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert "chunks of 14 tokens, 3.00 per training document" in captured.out + captured.err
    final = json.loads((out / "eval.json").read_text())
    assert 0.0 <= final["test_accuracy"] <= 1.0 and final["test_examples"] == 16
    model = attnkit.load(out / "model")
    assert isinstance(model, ChunkedClassifier) and model.config.long == mode and model.config.chunk_len == 14


def test_long_documents_refused_for_tagging(long_docs: Path, tmp_path: Path, capsys) -> None:
    code = main(["finetune", "ner", "--model", str(long_docs / "bert"), "--train", str(long_docs / "train.tsv"),
                 "--out", str(tmp_path / "o"), "--no-progress", "--set", "data.long=memory"])
    err = capsys.readouterr().err
    assert code == 2 and "data.long=memory" in err and len(err.strip().splitlines()) == 1, err

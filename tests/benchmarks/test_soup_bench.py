"""benchmarks/soup.py on tiny runs: its scores agree with training's evaluation and with ``attnkit predict``."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

from attnkit.cli.main import main as attnkit_main
from attnkit.data.wordpiece import WordPieceTokenizer
from attnkit.models import BertModel
from attnkit.models.bert import bert_preset

WORDS = "the a movie film story plot was is very quite this that it and with".split()


def sentiment_tsv(path: Path, rng: random.Random, n: int) -> Path:
    rows = []
    for _ in range(n):
        label = rng.choice("01")
        words = rng.choices(WORDS, k=rng.randint(2, 10))
        words.insert(rng.randint(0, len(words)), "good" if label == "1" else "bad")
        rows.append(f"{' '.join(words)} \t{label}\n")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("sentence\tlabel\n" + "".join(rows))
    return path


def tiny_task(root: Path, *, seed: int, n_train: int, n_dev: int) -> Path:
    """``root/data/sst2/{train,dev}.tsv`` and a tiny random BERT with its WordPiece vocabulary in ``root/tiny``; the dev file."""
    rng = random.Random(seed)
    sentiment_tsv(root / "data" / "sst2" / "train.tsv", rng, n_train)
    dev = sentiment_tsv(root / "data" / "sst2" / "dev.tsv", rng, n_dev)
    tok = WordPieceTokenizer.train([root / "data" / "sst2" / "train.tsv"], vocab_size=80)
    torch.manual_seed(0)
    BertModel(bert_preset("bert-test", vocab_size=tok.vocab_size, max_positions=32)).save_pretrained(root / "tiny", tokenizer=tok)
    return dev


@pytest.mark.slow
def test_soup_scores(load_benchmark, tmp_path, capsys):
    soup = load_benchmark("soup")
    dev = tiny_task(tmp_path, seed=3, n_train=128, n_dev=48)
    runs = []
    for seed in (0, 1):  # finetune.py's layout: RUN/sst2/{model,eval.json}
        run = tmp_path / f"run{seed}"
        code = attnkit_main(["finetune", "classify", "--model", str(tmp_path / "tiny"), "--train", str(tmp_path / "data" / "sst2" / "train.tsv"),
                             "--dev", str(dev), "--out", str(run / "sst2"), "--no-progress", "--epochs", "1", "--max-len", "66",
                             "--set", "train.device=cpu", "--set", "train.optim.lr=1e-3", "--set", "train.batch_size=16",
                             "--set", f"train.seed={seed}"])
        assert code == 0
        runs.append(run)
    soup.main(["--task", "sst2", "--data", str(tmp_path / "data"), "--device", "cpu", "--out", str(tmp_path / "soups"),
               "--out-dir", str(tmp_path / "results"), *map(str, runs)])
    capsys.readouterr()
    (result,) = (tmp_path / "results").glob("soup-sst2-*.json")
    payload = json.loads(result.read_text())
    rows = {r["name"]: r for r in payload["rows"]}
    for i in (0, 1):  # the Trainer's own dev evaluation of the saved model
        assert rows[f"seed run {i}"]["dev"] == pytest.approx(rows[f"seed run {i}"]["dev_at_training"], abs=1e-9)
    lines = [line.split("\t") for line in dev.read_text().splitlines()[1:]]
    (tmp_path / "dev.txt").write_text("".join(s + "\n" for s, _ in lines))
    assert attnkit_main(["predict", "--model", str(tmp_path / "soups" / "sst2-soup"), str(tmp_path / "dev.txt"), "--device", "cpu",
                         "--max-len", "66"]) == 0
    predicted = capsys.readouterr().out.split()
    accuracy = sum(p == y for p, (_, y) in zip(predicted, lines)) / len(lines)
    assert rows["soup"]["dev"] == pytest.approx(accuracy, abs=1e-9)
    s = payload["summary"]
    assert s["ingredients_min"] <= s["ingredients_mean"] <= s["ingredients_max"]
    assert s["soup"] == rows["soup"]["dev"] and s["target"] == 0.91


@pytest.mark.slow
def test_finetune_soup_option(load_benchmark, tmp_path, capsys):
    """``finetune.py --soup 2`` on the sst2-minilm recipe (a tiny model in place of the stage's): seeds 0 and 1 from
    one start, their weight mean, scored like the single run."""
    import argparse

    from safetensors.torch import load_file

    bench = load_benchmark("finetune")
    dev = tiny_task(tmp_path, seed=4, n_train=96, n_dev=40)
    args = argparse.Namespace(device="cpu", quick=False, soup=2, seeds=None, no_stages=True, data=tmp_path / "data",
                              set=[f"data.model={tmp_path / 'tiny'}", "data.epochs=2", "train.optim.lr=1e-3", "train.batch_size=16",
                                   "train.reg.ema_decay=0", "train.eval.every=6"])
    row = bench.run_task("sst2", args, tmp_path / "out")
    capsys.readouterr()
    assert row["soup_of"] == 2 and [r["seed"] for r in row["ingredients"]] == [0, 1]
    states = [load_file(str(tmp_path / "out" / f"sst2-seed{i}" / "model" / "model.safetensors")) for i in (0, 1)]
    soup = load_file(str(tmp_path / "out" / "sst2" / "model" / "model.safetensors"))
    for k, v in soup.items():
        torch.testing.assert_close(v, (states[0][k].double() + states[1][k].double()).div(2).to(v.dtype), rtol=0, atol=1e-7)
    lines = [line.split("\t") for line in dev.read_text().splitlines()[1:]]
    (tmp_path / "dev.txt").write_text("".join(s + "\n" for s, _ in lines))
    assert attnkit_main(["predict", "--model", str(tmp_path / "out" / "sst2" / "model"), str(tmp_path / "dev.txt"), "--device", "cpu"]) == 0
    predicted = capsys.readouterr().out.split()
    assert row["value"] == pytest.approx(sum(p == y for p, (_, y) in zip(predicted, lines)) / len(lines), abs=1e-9)
    assert row["ingredients_mean"] == pytest.approx(sum(r["value"] for r in row["ingredients"]) / 2)

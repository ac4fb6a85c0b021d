"""Layer-wise learning-rate decay (``train.optim.layer_decay``; ELECTRA, Clark et al. 2020): the lr of
every parameter against the rule written out by name, schedules that keep the ratios, the
unchanged groups at 1.0, rejected values and models, and a ``finetune classify`` run."""

from __future__ import annotations

import json
import math
import random
import re
from pathlib import Path

import pytest
import torch
from torch import nn

from attnkit.cli.main import main
from attnkit.data.wordpiece import WordPieceTokenizer
from attnkit.errors import ConfigError
from attnkit.models import BertModel, Transformer, TransformerConfig
from attnkit.models.bert import bert_preset
from attnkit.models.bert_heads import BertClassifier, BertTaskConfig
from attnkit.training.checkpoint import latest_checkpoint, load_trainer_state
from attnkit.training.config import OptimConfig, TrainConfig
from attnkit.training.optim import base_lr, build_optimizer, layer_depths, param_groups
from attnkit.training.schedules import build_scheduler, linear_warmup_linear_decay, noam

LR, XI = 1e-3, 0.8


def classifier(n_layers: int = 3, **encoder: object) -> BertClassifier:
    enc = bert_preset("bert-test", n_layers=n_layers, **encoder)
    return BertClassifier(BertTaskConfig(encoder=enc, num_labels=2, labels=("no", "yes"), classifier="cls_tanh"))


def expected_lr(name: str, n_layers: int, prefix: str = "bert.") -> float:
    """The rule of the task, read off the parameter's name: embeddings xi^(L+1), layer i xi^(L-i), the rest 1."""
    if name.startswith(prefix + "embed."):
        return LR * XI ** (n_layers + 1)
    m = re.match(re.escape(prefix) + r"layers\.(\d+)\.", name)
    if m:
        return LR * XI ** (n_layers - int(m.group(1)))
    return LR


def lr_of(optimizer: torch.optim.Optimizer) -> dict[int, float]:
    return {id(p): g["lr"] for g in optimizer.param_groups for p in g["params"]}


@pytest.mark.parametrize("n_layers", [2, 3])
def test_group_lrs_follow_depth(n_layers: int) -> None:
    model = classifier(n_layers)
    opt = build_optimizer(model, "adamw", lr=LR, weight_decay=0.01, layer_decay=XI)
    lrs = lr_of(opt)
    wds = {id(p): g["weight_decay"] for g in opt.param_groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert len(lrs) == len(named) == sum(len(g["params"]) for g in opt.param_groups)  # each parameter once
    for name, p in named.items():
        assert math.isclose(lrs[id(p)], expected_lr(name, n_layers), rel_tol=1e-12), name
        assert wds[id(p)] == (0.01 if p.ndim >= 2 else 0.0), name  # the decay / no-decay split is kept
    assert lrs[id(model.out.weight)] == lrs[id(model.dense.weight)] == LR  # the task head at the full lr
    assert len(opt.param_groups) == 2 * (n_layers + 2)  # (scale, weight decay) pairs
    assert base_lr(opt) == LR


def test_bare_encoder_with_pooler_and_factorised_embeddings() -> None:
    model = BertModel(bert_preset("bert-test", d_embed=16))  # names without a "bert." prefix; E -> H projection
    opt = build_optimizer(model, "adam", lr=LR, layer_decay=XI)
    lrs = lr_of(opt)
    for name, p in model.named_parameters():
        assert math.isclose(lrs[id(p)], expected_lr(name, 2, prefix=""), rel_tol=1e-12), name
    assert math.isclose(lrs[id(model.embed.project.weight)], LR * XI**3, rel_tol=1e-12)
    assert lrs[id(model.pooler.weight)] == LR
    depths, n_layers = layer_depths(model)
    assert n_layers == 2 and depths["layers.1.ffn.w1.weight"] == 2 and depths["pooler.bias"] == 3


@pytest.mark.parametrize("kind", ["linear", "cosine", "constant"])
def test_schedules_keep_the_ratios(kind: str) -> None:
    model = classifier(2)
    opt = build_optimizer(model, "adamw", lr=LR, weight_decay=0.01, layer_decay=XI)
    start = lr_of(opt)
    sched = build_scheduler(opt, kind, warmup=2, total_steps=8)
    for step in range(1, 6):
        if kind == "linear":
            assert math.isclose(base_lr(opt), LR * linear_warmup_linear_decay(step, 2, 8), rel_tol=1e-12)
        now = lr_of(opt)
        top = now[id(model.out.weight)]
        assert top > 0
        for pid, lr in now.items():
            assert math.isclose(lr / top, start[pid] / LR, rel_tol=1e-9)  # the ratio fixed at build time
        opt.step()  # no gradients: a no-op, but the scheduler expects it first
        sched.step()


def test_noam_scales_each_group() -> None:
    model = classifier(2)
    opt = build_optimizer(model, "adam", lr=1.0, layer_decay=XI)  # the Trainer's call for noam
    sched = build_scheduler(opt, "noam", warmup=3, total_steps=10, d_model=32, factor=2.0)
    for step in range(1, 5):
        for g in opt.param_groups:
            assert math.isclose(g["lr"], g["lr_scale"] * noam(step, 32, 3, 2.0), rel_tol=1e-12)
        assert math.isclose(base_lr(opt), noam(step, 32, 3, 2.0), rel_tol=1e-12)
        opt.step()
        sched.step()


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_layer_decay_one_gives_the_old_groups(weight_decay: float) -> None:
    model = classifier(2)
    params = list(model.parameters())
    old = [{"params": params, "weight_decay": 0.0}] if weight_decay == 0 else [
        {"params": [p for p in params if p.ndim >= 2], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0},
    ]
    for groups in (param_groups(model, weight_decay), param_groups(model, weight_decay, 1.0)):
        assert [set(g) for g in groups] == [set(g) for g in old]  # no lr_scale, no lr
        assert [[id(p) for p in g["params"]] for g in groups] == [[id(p) for p in g["params"]] for g in old]
        assert [g["weight_decay"] for g in groups] == [g["weight_decay"] for g in old]
    opt = build_optimizer(model, "adamw", lr=LR, weight_decay=weight_decay, layer_decay=1.0)
    assert all(g["lr"] == LR and "lr_scale" not in g for g in opt.param_groups)


def test_frozen_parameters_are_left_out() -> None:
    model = classifier(2)
    model.bert.embed.requires_grad_(False)
    opt = build_optimizer(model, "adamw", lr=LR, weight_decay=0.01, layer_decay=XI)
    assert not any(id(p) in lr_of(opt) for p in model.bert.embed.parameters())
    assert min(g["lr_scale"] for g in opt.param_groups) == pytest.approx(XI**2)


@pytest.mark.parametrize("value", [0, 0.0, 1.5, -0.5])
def test_invalid_values_are_rejected(value: float) -> None:
    with pytest.raises(ConfigError, match=r"layer_decay=.* is not allowed; must be in \(0, 1\]"):
        TrainConfig(optim=OptimConfig(layer_decay=value))
    with pytest.raises(ConfigError, match=r"layer_decay=.* is not allowed"):
        build_optimizer(nn.Linear(2, 2), "adamw", lr=LR, layer_decay=value)
    assert TrainConfig(optim=OptimConfig(layer_decay=1)).optim.layer_decay == 1.0  # an int from --set becomes a float
    assert TrainConfig().with_overrides(["optim.layer_decay=0.75"]).optim.layer_decay == 0.75


def test_models_without_separate_layers_are_rejected() -> None:
    albert = classifier(4, d_embed=16, share_layers=True)
    with pytest.raises(ConfigError, match="layer_decay needs separate layers; BertClassifier shares one layer across its 4 depths"):
        build_optimizer(albert, "adamw", lr=LR, layer_decay=XI)
    build_optimizer(albert, "adamw", lr=LR)  # without layer decay it trains as before
    with pytest.raises(ConfigError, match="has none"):
        build_optimizer(nn.Linear(2, 2), "adamw", lr=LR, layer_decay=XI)
    seq2seq = Transformer(TransformerConfig(src_vocab_size=20, tgt_vocab_size=20, d_model=16, n_heads=2, d_ff=32,
                                            n_encoder_layers=1, n_decoder_layers=1))
    with pytest.raises(ConfigError, match="one stack of layers; Transformer has 2 .*encoder.layers, decoder.layers"):
        build_optimizer(seq2seq, "adam", lr=LR, layer_decay=XI)


# -- attnkit finetune classify --set train.optim.layer_decay=0.8 --------------------------------------
WORDS = "the a movie film was is very quite this that it and with".split()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A tiny classify set and random bert-test encoders (separate and shared layers) with a tokenizer."""
    root = tmp_path_factory.mktemp("layer_decay")
    rng = random.Random(0)
    rows = []
    for _ in range(48):
        label = rng.choice(["negative", "positive"])
        words = rng.choices(WORDS, k=rng.randint(2, 8)) + ["good" if label == "positive" else "bad"]
        rows.append(f"{' '.join(words)}\t{label}\n")
    (root / "train.tsv").write_text("sentence\tlabel\n" + "".join(rows))
    (root / "corpus.txt").write_text(" ".join(WORDS + ["good", "bad"]) * 3 + "\n")
    tok = WordPieceTokenizer.train([root / "corpus.txt"], vocab_size=80)
    BertModel(bert_preset("bert-test", vocab_size=tok.vocab_size, max_positions=32)).save_pretrained(root / "bert", tokenizer=tok)
    albert = bert_preset("bert-test", vocab_size=tok.vocab_size, max_positions=32, d_embed=16, share_layers=True)
    BertModel(albert).save_pretrained(root / "albert", tokenizer=tok)
    return root


def finetune(tiny: Path, model: str, out: Path, capsys) -> tuple[int, str, str]:
    argv = ["finetune", "classify", "--model", tiny / model, "--train", tiny / "train.tsv", "--dev", tiny / "train.tsv",
            "--out", out, "--no-progress", "--set", "train.device=cpu", "--set", "train.steps=3", "--set", "train.batch_size=16",
            "--set", "train.log_every=1", "--set", "train.optim.layer_decay=0.8"]
    code = main([str(a) for a in argv])
    stdout, err = capsys.readouterr()
    return code, stdout, err


def test_finetune_classify_with_layer_decay(tiny: Path, tmp_path: Path, capsys) -> None:
    code, stdout, err = finetune(tiny, "bert", tmp_path / "o", capsys)
    assert code == 0, err
    assert json.loads((tmp_path / "o" / "run_config.json").read_text())["train"]["optim"]["layer_decay"] == 0.8
    state = load_trainer_state(latest_checkpoint(tmp_path / "o"))
    groups = state["optimizer"]["param_groups"]
    scales = sorted({g["lr_scale"] for g in groups})
    assert scales == pytest.approx([0.8**3, 0.8**2, 0.8, 1.0])  # embeddings, layers 0 and 1, pooler and head
    for g in groups:
        assert math.isclose(g["initial_lr"], 5e-5 * g["lr_scale"], rel_tol=1e-12)
    logged = [json.loads(line) for line in (tmp_path / "o" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "loss" in r] == [1, 2, 3]
    assert all(math.isfinite(r["loss"]) for r in logged if "loss" in r)


def test_finetune_albert_with_layer_decay_is_one_line(tiny: Path, tmp_path: Path, capsys) -> None:
    code, _, err = finetune(tiny, "albert", tmp_path / "o", capsys)
    assert code == 2 and "layer_decay needs separate layers" in err and len(err.strip().splitlines()) == 1

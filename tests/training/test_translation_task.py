"""The translation task in the training loop: exact resume across epochs, evaluation, decoding."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import attnkit
from attnkit.data.parallel import TokenBatches, read_parallel
from attnkit.data.subword import train_subword_tokenizer
from attnkit.training import ExecutionConfig, ScheduleConfig, TrainConfig, Trainer
from attnkit.training.translation import TranslationTask, encode_pairs, translate_lines


@pytest.fixture(scope="module")
def setup(multi30k_sample):
    train = read_parallel(multi30k_sample, "train", "de", "en", limit=60)
    val = read_parallel(multi30k_sample, "val", "de", "en", limit=8)
    tok = train_subword_tokenizer(train.src + train.tgt, 300)
    cfg = attnkit.preset("transformer-tiny", src_vocab_size=tok.get_vocab_size(), tgt_vocab_size=tok.get_vocab_size(), dropout=0.1)
    return tok, train, val, cfg


def make_task(setup) -> TranslationTask:
    tok, train, val, cfg = setup
    return TranslationTask(
        TokenBatches(encode_pairs(tok, train, cfg.max_len), 400),  # about 4 batches per epoch
        valid=TokenBatches(encode_pairs(tok, val, cfg.max_len), 400),
        tokenizer=tok,
        bleu_sources=val.src,
        bleu_references=val.tgt,
        beam_size=2,
    )


def test_resume_is_exact_across_epochs(setup, tmp_path):
    *_, cfg = setup
    train_cfg = TrainConfig(steps=10, save_every=5, log_every=0, device="cpu", schedule=ScheduleConfig(warmup=4), execution=ExecutionConfig(precision="fp32"))
    torch.manual_seed(0)
    straight = attnkit.Transformer(cfg)
    Trainer(straight, make_task(setup), train_cfg, tmp_path / "a", progress=False).fit()

    torch.manual_seed(0)
    first = attnkit.Transformer(cfg)
    Trainer(first, make_task(setup), dataclasses.replace(train_cfg, steps=5), tmp_path / "b", progress=False).fit()
    resumed = attnkit.Transformer(cfg)
    trainer = Trainer(resumed, make_task(setup), train_cfg, tmp_path / "b", progress=False)
    trainer.fit(resume=True)
    n_batches = len(make_task(setup).train.plan())
    assert 5 < n_batches < 10  # so the resume is mid-epoch and the run goes on into a new epoch's order
    assert trainer.epoch == 1
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


def test_evaluate_reports_loss_and_bleu(setup):
    *_, cfg = setup
    model = attnkit.Transformer(cfg).eval()
    with torch.no_grad():
        metrics = make_task(setup).evaluate(model)
    assert set(metrics) == {"loss", "bleu"}
    assert metrics["loss"] > 0 and 0.0 <= metrics["bleu"] <= 100.0


def test_translate_lines_keeps_order_empty_lines_and_counts_truncation(setup):
    tok, _, val, cfg = setup
    torch.manual_seed(0)
    model = attnkit.Transformer(dataclasses.replace(cfg, max_len=48)).eval()
    long = " ".join(val.src[:6])
    assert len(tok.encode(long).ids) > 48 and max(len(tok.encode(s).ids) for s in val.src[:2]) <= 48
    lines = [val.src[0], "", long, "   ", val.src[1]]
    out, truncated = translate_lines(model, tok, lines, beam_size=2, batch_size=2)
    assert len(out) == 5 and out[1] == "" and out[3] == "" and truncated == 1
    # Each sentence's translation does not depend on its batch neighbours or position.
    alone = [translate_lines(model, tok, [s], beam_size=2)[0][0] for s in (val.src[0], val.src[1])]
    assert [out[0], out[4]] == alone
    greedy, _ = translate_lines(model, tok, [val.src[0]], beam_size=1)
    nocache, _ = translate_lines(model, tok, [val.src[0]], beam_size=1, use_cache=False)
    assert greedy == nocache


def test_bleu_scores_cased_and_lowercased():
    from attnkit.metrics import bleu_scores

    refs = ["A man rides a bike.", "Two dogs play in the snow."]
    perfect = bleu_scores(refs, refs)
    assert perfect["bleu"] == pytest.approx(100.0) and perfect["bleu_lc"] == pytest.approx(100.0)
    shouted = bleu_scores([r.upper() for r in refs], refs)
    assert shouted["bleu"] < 10.0 and shouted["bleu_lc"] == pytest.approx(100.0)  # case matters only when cased
    assert "case:mixed" in shouted["bleu_signature"] and "tok:13a" in shouted["bleu_signature"]
    assert "case:lc" in shouted["bleu_lc_signature"]

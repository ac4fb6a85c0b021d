"""Exposure bias remedies: scheduled sampling against teacher forcing and a loop from the definition,
the fast gradient perturbation against autograd, the decay schedules, the config and BLEU by length."""

from __future__ import annotations

import json
import math

import pytest
import torch

import attnkit
from attnkit.data.seq2seq import collate
from attnkit.errors import ConfigError
from attnkit.objectives import seq2seq_loss
from attnkit.training import Seq2SeqTask, TrainConfig
from attnkit.training.exposure import ExposureConfig, fgm_perturbation, gold_probability, mix_inputs

V = 20


def tiny(dropout: float) -> attnkit.Transformer:
    torch.manual_seed(0)
    cfg = attnkit.preset("transformer-tiny", src_vocab_size=V, tgt_vocab_size=V, dropout=dropout)
    return attnkit.Transformer(cfg)


def batch():
    g = torch.Generator().manual_seed(1)
    pairs = [(torch.randint(4, V, (n,), generator=g).tolist(), torch.randint(4, V, (m,), generator=g).tolist())
             for n, m in ((5, 7), (3, 4), (6, 2))]
    return collate(pairs)  # targets of different lengths: padding inside the batch


def task(**exposure) -> Seq2SeqTask:
    return Seq2SeqTask(None, batch_size=3, label_smoothing=0.1, exposure=ExposureConfig(**exposure))


@pytest.mark.parametrize("exposure", [dict(kind="self_feed", prob=0.0), dict(kind="scheduled", schedule="linear", k=1.0, c=0.0)])
def test_gold_probability_one_is_teacher_forcing_exactly(exposure):
    model, b = tiny(dropout=0.3).train(), batch()  # dropout on: the random state must be left as teacher forcing leaves it
    torch.manual_seed(5)
    reference, n_ref = seq2seq_loss(model(b.src, b.tgt_in).logits, b.tgt_out, epsilon=0.1, pad_id=0)
    torch.manual_seed(5)
    loss, n = task(**exposure).loss(model, b)
    assert torch.equal(loss, reference) and int(n) == int(n_ref)


def test_all_model_tokens_equal_the_first_pass_greedy_loop():
    model, b = tiny(dropout=0.0).train(), batch()
    with torch.no_grad():
        first = model(b.src, b.tgt_in).logits  # (B, T, V): teacher-forced
    expected = b.tgt_in.clone()
    for i in range(b.tgt_in.shape[0]):  # from the definition: position t reads the prediction made at t - 1
        for t in range(1, b.tgt_in.shape[1]):
            if b.tgt_in[i, t] != 0:
                expected[i, t] = int(first[i, t - 1].argmax())
    assert not torch.equal(expected, b.tgt_in)  # an untrained model guesses wrong: the test can tell the two apart
    reference, _ = seq2seq_loss(model(b.src, expected).logits, b.tgt_out, epsilon=0.1, pad_id=0)
    for exposure in (dict(kind="self_feed", prob=1.0), dict(kind="scheduled", schedule="linear", k=0.0)):
        loss, _ = task(**exposure).loss(model, b)
        torch.testing.assert_close(loss, reference, rtol=0, atol=0)
    model.eval()  # validation reads the gold inputs whatever the remedy
    gold, _ = seq2seq_loss(model(b.src, b.tgt_in).logits, b.tgt_out, epsilon=0.1, pad_id=0)
    assert torch.equal(task(kind="self_feed", prob=1.0).loss(model, b)[0], gold)


def test_mixing_keeps_bos_and_padding_and_draws_model_tokens_at_the_rate():
    tgt_in = torch.full((400, 50), 7)
    tgt_in[:, 0], tgt_in[:, 40:] = 1, 0
    predicted = torch.full((400, 50), 9)
    mixed = mix_inputs(tgt_in, predicted, 0.7, pad_id=0, generator=torch.Generator().manual_seed(0))
    assert (mixed[:, 0] == 1).all() and (mixed[:, 40:] == 0).all()
    body = mixed[:, 1:40]
    assert set(body.unique().tolist()) == {7, 9}
    assert abs((body == 9).float().mean().item() - 0.3) < 0.01


def test_decay_schedules_follow_bengio_et_al():
    steps = (0, 10, 300, 5000)
    lin = ExposureConfig(kind="scheduled", schedule="linear", k=0.9, c=1e-3, min_gold=0.2)
    assert [gold_probability(lin, i) for i in steps] == pytest.approx([0.9, 0.89, 0.6, 0.2])
    exp = ExposureConfig(kind="scheduled", schedule="exponential", k=0.99)
    assert [gold_probability(exp, i) for i in steps] == pytest.approx([0.99**i for i in steps])
    inv = ExposureConfig(kind="scheduled", schedule="inverse_sigmoid", k=100.0)
    assert [gold_probability(inv, i) for i in steps] == pytest.approx([100 / (100 + math.exp(i / 100)) for i in steps])
    assert gold_probability(ExposureConfig(kind="self_feed", prob=0.25), 123) == 0.75
    assert gold_probability(ExposureConfig(kind="none"), 10**6) == 1.0


def test_fgm_perturbation_has_norm_epsilon_along_the_gradient():
    g = torch.randn(3, 5, 8)
    g[2] = 0.0
    r = fgm_perturbation(g, 0.5)
    norms = r.flatten(1).norm(dim=1)
    torch.testing.assert_close(norms[:2], torch.full((2,), 0.5))
    assert norms[2] == 0
    cos = torch.nn.functional.cosine_similarity(r[:2].flatten(1), g[:2].flatten(1))
    torch.testing.assert_close(cos, torch.ones(2))


def test_adversarial_loss_against_autograd():
    model, b = tiny(dropout=0.0).train(), batch()
    eps = 2.0
    embedded: list[torch.Tensor] = []

    def keep(module, args, out):
        out.retain_grad()
        embedded.append(out)

    handle = model.tgt_embed.register_forward_hook(keep)
    clean, _ = seq2seq_loss(model(b.src, b.tgt_in).logits, b.tgt_out, epsilon=0.1, pad_id=0)
    clean.backward()
    handle.remove()
    g = embedded[0].grad  # (B, T, d)
    r = eps * g / g.flatten(1).norm(dim=1)[:, None, None]
    handle = model.tgt_embed.register_forward_hook(lambda m, a, out: out + r)
    with torch.no_grad():
        adv, _ = seq2seq_loss(model(b.src, b.tgt_in).logits, b.tgt_out, epsilon=0.1, pad_id=0)
    handle.remove()
    model.zero_grad()
    loss, _ = task(kind="adversarial", epsilon=eps).loss(model, b)
    torch.testing.assert_close(loss, (clean.detach() + adv) / 2)
    assert adv > clean  # a step along the gradient raises the loss
    assert not model.tgt_embed._forward_hooks  # the hook is gone after the loss


def test_config_errors_and_refusals(tmp_path):
    with pytest.raises(ConfigError, match="write train.exposure.kind=scheduled"):
        TrainConfig().with_overrides(["exposure=scheduled"], prefix="train.")
    with pytest.raises(ConfigError, match="must be in \\(0, 1\\)"):
        ExposureConfig(kind="scheduled", schedule="exponential", k=2.0)
    with pytest.raises(ConfigError, match="cuda_graphs=false"):
        TrainConfig().with_overrides(["exposure.kind=adversarial", "execution.cuda_graphs=true"])
    cfg = TrainConfig(device="cpu").with_overrides(["exposure.kind=self_feed"])
    assert cfg.exposure.prob == 0.25
    from attnkit.training import Trainer

    class NotSeq2Seq:
        def batches(self, epoch, seed):
            return iter(())

    with pytest.raises(ConfigError, match="needs an encoder-decoder task"):
        Trainer(tiny(0.0), NotSeq2Seq(), cfg, tmp_path, progress=False)


def test_trainer_tells_the_task_its_step(tmp_path):
    from attnkit.data.seq2seq import PairDataset
    from attnkit.training import ExecutionConfig, ScheduleConfig, Trainer

    class Recording(Seq2SeqTask):
        def loss(self, model, b, epsilon=None):
            seen.append(self.step)
            return super().loss(model, b, epsilon)

    seen: list[int] = []
    pairs = [([4 + i % 9, 5], [6, 4 + i % 7]) for i in range(8)]
    exposure = ExposureConfig(kind="scheduled", schedule="exponential", k=0.5)
    t = Recording(PairDataset(pairs), batch_size=4, exposure=exposure)
    cfg = TrainConfig(steps=3, grad_accum=2, log_every=0, device="cpu", schedule=ScheduleConfig(warmup=1),
                      execution=ExecutionConfig(precision="fp32"), exposure=exposure)
    Trainer(tiny(0.0), t, cfg, tmp_path, progress=False).fit()
    assert seen == [0, 0, 1, 1, 2, 2]


def test_bleu_by_length_against_sacrebleu():
    from sacrebleu.metrics import BLEU

    sources = ["a b c d e f", "a", "a b c", "a b", "a b c d", "a b c d e f g h", "x y"]
    references = ["the cat sat on the mat", "a dog", "it is red", "two words", "a man in a hat", "one two three four five six", "hi"]
    hypotheses = ["the cat sat on a mat", "a dog", "it is blue", "two words", "a man with a hat", "one two three five six", "hello"]
    from attnkit.metrics import bleu_by_length

    groups = bleu_by_length(sources, hypotheses, references)
    # by words: [a](1) [a b, x y](2) [a b c](3) [a b c d](4) [a b c d e f](6) [... h](8) -> 3, 2, 2 sentences
    expected = [[1, 3, 6], [2, 4], [0, 5]]
    assert [g["sentences"] for g in groups] == [3, 2, 2]
    assert [(g["min_words"], g["max_words"]) for g in groups] == [(1, 2), (3, 4), (6, 8)]
    for g, idx in zip(groups, expected):
        ref = BLEU(tokenize="13a").corpus_score([hypotheses[i] for i in idx], [[references[i] for i in idx]]).score
        assert g["bleu"] == pytest.approx(ref)


def test_train_translate_with_scheduled_sampling_and_eval_by_length(multi30k_sample, tmp_path, capsys):
    from attnkit.cli.main import main
    from attnkit.metrics import bleu_by_length

    sets = ["model.max_len=64", "train.steps=6", "train.schedule.warmup=2", "train.save_every=3", "train.log_every=3",
            "train.device=cpu", "data.max_tokens=400", "data.bleu_sentences=0", "data.average_last=2", "data.max_pairs=120",
            "train.exposure.kind=scheduled", "train.exposure.schedule=exponential", "train.exposure.k=0.5"]
    argv = ["train", "translate", "--src", "de", "--tgt", "en", "--data", str(multi30k_sample), "--out", str(tmp_path / "run"),
            "--preset", "transformer-tiny", "--vocab-size", "200", "--no-progress"]
    assert main(argv + [x for s in sets for x in ("--set", s)]) == 0
    run_config = json.loads((tmp_path / "run" / "run_config.json").read_text())
    assert run_config["train"]["exposure"]["kind"] == "scheduled"
    capsys.readouterr()
    hyp = tmp_path / "hyp.en"
    code = main(["eval", "translate", "--model", str(tmp_path / "run" / "model"), "--data", str(multi30k_sample), "--split", "val",
                 "--beam", "1", "--json", "--hypotheses", str(hyp)])
    out, err = capsys.readouterr()
    assert code == 0, err
    record = json.loads(out)
    from attnkit.data.parallel import read_parallel

    val = read_parallel(multi30k_sample, "val", "de", "en")
    hyps = hyp.read_text(encoding="utf-8").splitlines()
    assert record["bleu_by_length"] == bleu_by_length(val.src, hyps, val.tgt)
    assert [g["sentences"] for g in record["bleu_by_length"]] == [14, 13, 13]

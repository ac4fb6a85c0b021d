"""Denoising examples and batches (T5, BART, MASS) and the seq2seq loss on them against torch's cross-entropy."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from attnkit.data.noising import BartNoiseConfig, MassConfig
from attnkit.data.span_corruption import SpanCorruptionConfig, t5_lengths
from attnkit.models.transformer import Transformer, preset
from attnkit.runs.denoising import DenoisingDataConfig
from attnkit.training.denoising import DenoisingTask, noise_function, sentence_runs, stream_runs

DOCS = [[[10 + i for i in range(7)], [40, 41, 42], list(range(50, 75))], [[80, 81], [82, 83, 84, 85]]]
MASK, SENTINELS, EOS = 5, list(range(90, 100)), 2


def test_sentence_runs_keep_sentences_whole_within_budget():
    runs = sentence_runs(DOCS, 10)
    assert all(sum(map(len, r)) <= 10 for r in runs)
    assert [t for r in runs for s in r for t in s] == [t for d in DOCS for s in d for t in s]
    assert runs[0] == [DOCS[0][0], DOCS[0][1]]  # 7 + 3 tokens fit; the 25-token sentence is cut into pieces of 10
    assert runs[-1] == [[80, 81], [82, 83, 84, 85]]  # documents never share a run


def test_stream_runs_pack_across_documents():
    runs = stream_runs(DOCS, 13)
    flat = [t for d in DOCS for s in d for t in s]
    assert [r[0] for r in runs] == [flat[i : i + 13] for i in range(0, len(flat), 13)]


def noise(objective: str, **data):
    d = DenoisingDataConfig(text=("x",), t5=SpanCorruptionConfig(), bart=BartNoiseConfig(), mass=MassConfig(), **data)
    return noise_function(objective, d, mask_id=MASK, sentinel_ids=SENTINELS, eos_id=EOS, max_len=d.max_src_len)


def test_t5_examples_have_the_exact_lengths():
    raw, targets = t5_lengths(32)
    f = noise("t5", max_src_len=32)
    g = torch.Generator().manual_seed(0)
    src, tgt = f([list(range(100, 100 + raw))], g)
    assert len(src) == 32 and src[-1] == EOS and len(tgt) + 1 == targets and tgt[0] == SENTINELS[0]


def test_bart_and_mass_targets():
    g = torch.Generator().manual_seed(1)
    example = [list(range(10, 20)), list(range(20, 30))]
    src, tgt = noise("bart")(example, g)
    assert tgt == list(range(10, 30)) and MASK in src
    src, tgt = noise("mass")(example, g)
    assert len(tgt) == 10 and src.count(MASK) == 10 and tgt == list(range(10, 30))[src.index(MASK) : src.index(MASK) + 10]


def test_batches_follow_seed_and_epoch_and_loss_is_cross_entropy():
    runs = sentence_runs(DOCS * 4, 12)
    task = DenoisingTask(runs, runs[:3], noise("bart"), batch_size=4)
    a = [b.src.tolist() for b in task.batches(0, 7)]
    assert a == [b.src.tolist() for b in task.batches(0, 7)]
    assert a != [b.src.tolist() for b in task.batches(1, 7)]
    torch.manual_seed(0)
    model = Transformer(preset("transformer-tiny", src_vocab_size=128, tgt_vocab_size=128))
    batch = next(task.batches(0, 7))
    loss, n = task.loss(model, batch)
    logits = model(batch.src, batch.tgt_in).logits
    ref = F.cross_entropy(logits.reshape(-1, 128), batch.tgt_out.reshape(-1), ignore_index=0)
    assert int(n) == int((batch.tgt_out != 0).sum())
    torch.testing.assert_close(loss, ref)
    assert (batch.tgt_in[:, 0] == 1).all() and ((batch.tgt_out == EOS).sum(1) == 1).all()

"""attnkit train xlnet through the one run path: permutation batches, the query stream's loss, a saved XLNetLM."""

from __future__ import annotations

import json

import pytest
import torch

import attnkit
from attnkit.cli.main import main
from attnkit.objectives.mlm import IGNORE

TEXT = "".join(f"To be, or not to be, that is the question {i}:\nWhether 'tis nobler in the mind to suffer\n"
               f"The slings and arrows of outrageous fortune.\n\n" for i in range(30))
TINY = ["--set", "model.n_layers=1", "--set", "model.d_model=32", "--set", "model.n_heads=2", "--set", "train.steps=3",
        "--set", "train.batch_size=4", "--set", "train.eval.every=3", "--set", "train.schedule.warmup=1", "--set", "train.device=cpu",
        "--vocab-size", "120", "--max-seq-len", "24", "--set", "data.max_eval_pairs=8", "--set", "data.valid_fraction=0.1"]


def test_xlnet_trains_and_saves(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT)
    out = tmp_path / "run"
    assert main(["train", "xlnet", "--text", str(tmp_path / "t.txt"), "--out", str(out), "--no-progress", *TINY]) == 0
    assert json.loads((out / "run_config.json").read_text())["xlnet"]["k"] == 6.0
    model = attnkit.load(out / "model")
    assert type(model).__name__ == "XLNetLM" and model.config.d_model == 32


def test_batches_predict_about_a_sixth_and_the_loss_reads_the_targets(tmp_path):
    from attnkit.runs import job, resolve_configs

    (tmp_path / "t.txt").write_text(TEXT)
    j = job("xlnet")
    cfgs = resolve_configs(j, assignments=[f'data.text=["{tmp_path / "t.txt"}"]', "data.vocab_size=120", "data.max_seq_len=24",
                                           "train.batch_size=4", "train.device=cpu", "model.n_layers=1", "model.d_model=32",
                                           "model.n_heads=2"])
    prepared = j.prepare(cfgs, tmp_path / "out", resume=False, log=lambda s: None)
    batch = next(prepared.task.batches(0, 0))
    real = batch.maskable.sum(1)
    assert torch.equal((batch.mlm_labels != IGNORE).sum(1), torch.clamp((real.float() / 6).round().long(), min=1))
    prepared.model.eval()  # no dropout: the two passes must see the same network
    loss, n = prepared.task.loss(prepared.model, batch)
    logits = prepared.model(batch.ids, perm_mask=batch.perm_mask, target_mapping=batch.target_mapping,
                            segment_ids=batch.segment_ids, attention_mask=batch.attention_mask).logits
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.mlm_labels.reshape(-1), ignore_index=IGNORE)
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)


def test_memory_batches_match_transformers_over_two_segments(tmp_path):
    """xlnet.memory=true: the second half attends to the first half's cached states; the loss is
    transformers' XLNetLMHeadModel's over both halves, the second run with the first one's mems."""
    transformers = pytest.importorskip("transformers")
    from attnkit.hub.xlnet import save_hf_xlnet
    from attnkit.runs import job, resolve_configs

    (tmp_path / "t.txt").write_text(TEXT)
    j = job("xlnet")
    cfgs = resolve_configs(j, assignments=[f'data.text=["{tmp_path / "t.txt"}"]', "data.vocab_size=120", "data.max_seq_len=24",
                                           "train.batch_size=4", "train.device=cpu", "model.n_layers=2", "model.d_model=32",
                                           "model.n_heads=2", "xlnet.memory=true"])
    prepared = j.prepare(cfgs, tmp_path / "out", resume=False, log=lambda s: None)
    batch = next(prepared.task.batches(0, 0))
    s = batch.split
    assert s == (batch.ids.shape[1] + 1) // 2 and batch.perm_mask.shape[1:] == (s, s)
    model = prepared.model.eval()
    loss, n = prepared.task.loss(model, batch)
    save_hf_xlnet(model, tmp_path / "hf")
    hf = transformers.XLNetLMHeadModel.from_pretrained(tmp_path / "hf", mem_len=s).eval()
    with torch.no_grad():
        one = hf(batch.ids[:, :s], perm_mask=batch.perm_mask, target_mapping=batch.target_mapping, token_type_ids=batch.segment_ids[:, :s],
                 attention_mask=batch.attention_mask[:, :s], use_mems=True)
        two = hf(batch.ids[:, s:], mems=one.mems, perm_mask=batch.perm_mask_next, target_mapping=batch.target_mapping_next,
                 token_type_ids=batch.segment_ids[:, s:], attention_mask=batch.attention_mask[:, s:])
    logits = torch.cat([one.logits, two.logits], dim=1)
    ref = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), batch.mlm_labels.reshape(-1), ignore_index=IGNORE)
    torch.testing.assert_close(loss, ref, atol=1e-5, rtol=1e-5)
    assert int(n) == int((batch.mlm_labels != IGNORE).sum()) and (batch.target_mapping_next.sum() > 0)


def test_memory_trains_from_the_cli(tmp_path):
    (tmp_path / "t.txt").write_text(TEXT)
    out = tmp_path / "run"
    assert main(["train", "xlnet", "--text", str(tmp_path / "t.txt"), "--out", str(out), "--no-progress", *TINY,
                 "--set", "xlnet.memory=true"]) == 0
    metrics = json.loads((out / "run_config.json").read_text())
    assert metrics["xlnet"]["memory"] is True
    assert type(attnkit.load(out / "model")).__name__ == "XLNetLM"

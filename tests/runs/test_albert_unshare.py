"""ALBERT un-sharing: ``model.share_layers=false`` copies the shared layer into independent ones at load."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest
import torch

import attnkit
from attnkit.cli.main import main
from attnkit.data.wordpiece import WordPieceTokenizer
from attnkit.models import BertModel
from attnkit.models.bert import bert_preset, unshare_layers
from attnkit.runs.finetune import CheckpointModelConfig, set_layer_sharing

WORDS = "the a movie film story plot was is very this that".split()


def albert(vocab: int = 60) -> BertModel:
    torch.manual_seed(0)
    return BertModel(bert_preset("bert-test", vocab_size=vocab, max_positions=32, d_embed=16, share_layers=True, n_layers=3))


def test_unshared_outputs_equal_the_shared_model_before_any_update():
    shared = albert().eval()
    unshared = unshare_layers(shared)
    assert unshared.config.share_layers is False and shared.config.share_layers is True
    assert len({id(layer) for layer in unshared.layers}) == 3 and len({id(layer) for layer in shared.layers}) == 1
    ids = torch.randint(4, 60, (2, 9))
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[1, 6:] = False
    a = shared(ids, attention_mask=mask)
    b = unshared(ids, attention_mask=mask)
    assert torch.equal(a.last_hidden, b.last_hidden) and torch.equal(a.pooled, b.pooled)
    # one SGD step: the three copies move apart; the shared model is untouched
    before = shared.layers[0].self_attn.out_proj.weight.detach().clone()
    unshared.train()
    unshared(ids, attention_mask=mask).last_hidden.square().sum().backward()
    with torch.no_grad():
        for p in unshared.parameters():
            if p.grad is not None:
                p -= 0.1 * p.grad
    w = [layer.self_attn.out_proj.weight for layer in unshared.layers]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])
    assert torch.equal(shared.layers[0].self_attn.out_proj.weight, before)


def test_set_layer_sharing_rules():
    shared = albert()
    assert set_layer_sharing(shared, CheckpointModelConfig(), print) is shared  # unset: stays shared
    assert set_layer_sharing(shared, CheckpointModelConfig(share_layers=True), print) is shared
    separate = BertModel(bert_preset("bert-test", vocab_size=60, max_positions=32))
    assert set_layer_sharing(separate, CheckpointModelConfig(share_layers=False), print) is separate
    with pytest.raises(attnkit.errors.ConfigError, match="separate layers"):
        set_layer_sharing(separate, CheckpointModelConfig(share_layers=True), print)



def test_set_layer_sharing_unshares_the_encoder_of_a_pretraining_checkpoint():
    """``attnkit train mlm`` saves a BertPretraining, whose ``bert`` is a read-only view of ``mlm.bert``."""
    from attnkit.models.bert_pretraining import BertPretraining, BertPretrainingConfig
    from attnkit.training.finetune import encoder_of

    torch.manual_seed(0)
    source = BertPretraining(BertPretrainingConfig(encoder=albert().config, pair_task="sop")).eval()
    shared = source.bert
    out = set_layer_sharing(source, CheckpointModelConfig(share_layers=False), print)
    enc = encoder_of(out)
    assert enc is not shared and enc.config.share_layers is False and len({id(layer) for layer in enc.layers}) == 3
    ids = torch.randint(4, 60, (2, 9))
    assert torch.equal(enc(ids).last_hidden, shared(ids).last_hidden)

@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("albert")
    rng = random.Random(0)
    rows = [f"{' '.join(rng.choices(WORDS, k=4))} {y}\t{'positive' if y == 'good' else 'negative'}\n"
            for y in rng.choices(["good", "bad"], k=32)]
    (root / "train.tsv").write_text("sentence\tlabel\n" + "".join(rows))
    (root / "corpus.txt").write_text(" ".join(WORDS + ["good", "bad"]) * 3 + "\n")
    tok = WordPieceTokenizer.train([root / "corpus.txt"], vocab_size=80)
    albert(tok.vocab_size).save_pretrained(root / "albert", tokenizer=tok)
    return root


def finetune(data: Path, out: Path, *extra: str) -> int:
    argv = ["finetune", "classify", "--model", data / "albert", "--train", data / "train.tsv", "--dev", data / "train.tsv",
            "--out", out, "--no-progress", "--set", "train.device=cpu", "--set", "train.steps=2", "--set", "train.batch_size=16",
            "--set", "train.optim.lr=1e-2", *extra]
    return main([str(a) for a in argv])


def test_finetune_unshares_only_when_asked(data, tmp_path, capsys):
    assert finetune(data, tmp_path / "u", "--set", "model.share_layers=false", "--set", "train.optim.layer_decay=0.9") == 0
    assert "copied into 3 independent layers" in capsys.readouterr().out
    assert json.loads((tmp_path / "u" / "run_config.json").read_text())["model"] == {"share_layers": False}
    unshared = attnkit.load(tmp_path / "u" / "model")
    assert unshared.bert.config.share_layers is False  # layer-wise lr decay needs separate layers: it trained with them
    w = [layer.ffn.w1.weight for layer in unshared.bert.layers]
    assert not torch.equal(w[0], w[1])  # trained apart
    assert finetune(data, tmp_path / "s") == 0
    shared = attnkit.load(tmp_path / "s" / "model")
    assert shared.bert.config.share_layers is True
    assert len({id(layer) for layer in shared.bert.layers}) == 1


def test_unshared_run_starts_from_the_shared_runs_function(data, tmp_path):
    """Same seeds: the same fresh head and the same first loss; the second step's loss differs once the copies moved apart."""
    for name, extra in (("s", ()), ("u", ("--set", "model.share_layers=false"))):
        assert finetune(data, tmp_path / name, "--set", "train.log_every=1", *extra) == 0
    losses = [[json.loads(line)["loss"] for line in (tmp_path / n / "metrics.jsonl").read_text().splitlines() if '"loss"' in line]
              for n in "su"]
    assert losses[0][0] == losses[1][0] and losses[0][1] != losses[1][1]
    heads = [attnkit.load(tmp_path / n / "model").bert.config.share_layers for n in "su"]
    assert heads == [True, False]


def test_unshared_hugging_face_albert_matches_transformers(tmp_path):
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    cfg = transformers.AlbertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37,
                                    embedding_size=16, max_position_embeddings=40, hidden_dropout_prob=0.0,
                                    attention_probs_dropout_prob=0.0)
    hf = transformers.AlbertModel(cfg).eval()
    hf.save_pretrained(tmp_path / "hf")
    ours = unshare_layers(attnkit.load(tmp_path / "hf")).eval()
    assert len({id(layer) for layer in ours.layers}) == 3
    ids = torch.randint(1, 50, (2, 7))
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[1, 5:] = 0
    with torch.no_grad():
        ref = hf(input_ids=ids, attention_mask=mask).last_hidden_state
        got = ours(ids, attention_mask=mask).last_hidden
    torch.testing.assert_close(got[mask.bool()], ref[mask.bool()], atol=1e-5, rtol=0)

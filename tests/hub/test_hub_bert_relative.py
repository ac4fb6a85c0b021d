"""BERT checkpoints with relative positions (``position_embedding_type`` relative_key / relative_key_query).

Hugging Face transformers 5 dropped these types from its BERT, so the parity test runs transformers 4.x's
BertModel in a subprocess, from the install named by ``$ATTNKIT_TRANSFORMERS4`` (a folder holding a
``transformers`` < 5 package, e.g. ``pip install --no-deps --target DIR transformers==4.46.3``), and is
skipped without it. The export/import round trip and the key names run everywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import attnkit
from attnkit.hub.bert import save_hf_bert
from attnkit.models.bert import BertConfig, BertModel
from attnkit.models.transformer import AttentionConfig
from attnkit.positions.config import PositionConfig

HF4 = os.environ.get("ATTNKIT_TRANSFORMERS4")
KINDS = ["relative_key", "relative_key_query"]

# Runs under transformers 4.x: a random BertModel of the given position type, saved, and its outputs on a padded batch.
SCRIPT = r'''
import sys, types
stub = types.ModuleType("transformers.dependency_versions_check")
stub.dep_version_check = lambda *a, **k: None  # 4.x pins a tokenizers release older than the one installed
sys.modules["transformers.dependency_versions_check"] = stub
import torch
from transformers import BertConfig, BertModel
kind, out = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
c = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
               max_position_embeddings=16, position_embedding_type=kind, hidden_dropout_prob=0.0,
               attention_probs_dropout_prob=0.0, attn_implementation="eager")
m = BertModel(c).eval()
with torch.no_grad():
    for name, p in m.named_parameters():
        if "LayerNorm" in name or name.endswith("bias"):
            p.add_(0.1 * torch.randn_like(p))
m.save_pretrained(out, safe_serialization=True)
ids = torch.randint(1, 50, (2, 12), generator=torch.Generator().manual_seed(1))
mask = torch.ones(2, 12, dtype=torch.long); mask[1, 8:] = 0; ids[1, 8:] = 0
with torch.no_grad():
    h = m(ids, attention_mask=mask).last_hidden_state
torch.save({"ids": ids, "mask": mask, "hidden": h}, out + "/reference.pt")
'''


@pytest.mark.skipif(not HF4, reason="set ATTNKIT_TRANSFORMERS4 to a folder with transformers 4.x (its BERT has relative positions)")
@pytest.mark.parametrize("kind", KINDS)
def test_relative_bert_matches_transformers_4(tmp_path: Path, kind: str) -> None:
    out = tmp_path / "hf"
    env = {**os.environ, "PYTHONPATH": str(HF4)}
    subprocess.run([sys.executable, "-c", SCRIPT, kind, str(out)], check=True, env=env, cwd=tmp_path, capture_output=True)
    ref = torch.load(out / "reference.pt")
    model = attnkit.load(out).eval()
    assert isinstance(model, BertModel) and model.config.attention.position.kind == kind
    with torch.no_grad():
        got = model(ref["ids"], attention_mask=ref["mask"]).last_hidden
    keep = ref["mask"].bool()
    torch.testing.assert_close(got[keep], ref["hidden"][keep], atol=1e-5, rtol=0)


@pytest.mark.parametrize("kind", KINDS)
def test_export_names_and_round_trip(tmp_path: Path, kind: str) -> None:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, max_positions=16, d_model=32, n_heads=4, n_layers=2, d_ff=37,
                        attention=AttentionConfig(position=PositionConfig(kind=kind, max_distance=16)))  # type: ignore[arg-type]
    model = BertModel(config).eval()
    path = save_hf_bert(model, tmp_path / "hf")
    assert json.loads((path / "config.json").read_text())["position_embedding_type"] == kind
    state = load_file(str(path / "model.safetensors"))
    assert state["encoder.layer.1.attention.self.distance_embedding.weight"].shape == (31, 8)  # 2 * 16 - 1 distances, d_head
    back = attnkit.load(path).eval()
    ids = torch.randint(1, 50, (2, 10))
    torch.testing.assert_close(back(ids).last_hidden, model(ids).last_hidden, atol=0, rtol=0)
    assert back.embed.positions is not None  # the absolute table is kept (and not added), as in transformers


def test_relative_positions_replace_the_absolute_ones() -> None:
    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, max_positions=16, d_model=32, n_heads=4, n_layers=1, d_ff=37, dropout=0.0,
                        attention=AttentionConfig(dropout=0.0, position=PositionConfig(kind="relative_key", max_distance=16)))
    model = BertModel(config).eval()
    ids = torch.randint(1, 50, (1, 10))
    before = model(ids).last_hidden
    with torch.no_grad():
        model.embed.positions.embedding.weight.normal_()
    torch.testing.assert_close(model(ids).last_hidden, before, atol=0, rtol=0)


def test_other_position_types_are_refused(tmp_path: Path) -> None:
    from attnkit.errors import CheckpointError
    from attnkit.hub.bert import config_from_hf

    with pytest.raises(Exception, match="position_embedding_type='rotary'"):
        config_from_hf({"position_embedding_type": "rotary"}, "bert")
    assert CheckpointError

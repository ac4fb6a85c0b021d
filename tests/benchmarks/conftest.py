"""Load a script of ``benchmarks/`` as a module (they are scripts, not an installed package)."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]


def _load(name: str) -> ModuleType:
    """``benchmarks/<name>.py`` imported under ``<name>_bench``, with ``benchmarks/`` importable meanwhile."""
    spec = importlib.util.spec_from_file_location(f"{name}_bench", ROOT / "benchmarks" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))
    return module


@pytest.fixture(scope="session")
def load_benchmark():
    """The loader above, as a fixture: ``load_benchmark("listops")``."""
    return _load


@pytest.fixture(scope="module")
def hf_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny random Hugging Face BertForSequenceClassification (with its pooler) saved to a directory; d_ff unlike
    d_model so both FFN layers count apart."""
    transformers = pytest.importorskip("transformers")
    import torch

    torch.manual_seed(0)
    m = transformers.BertForSequenceClassification(transformers.BertConfig(
        vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37, max_position_embeddings=64))
    d = tmp_path_factory.mktemp("hf_bert_seq_cls")
    m.save_pretrained(d)
    return d

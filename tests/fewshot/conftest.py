"""A tiny random Hugging Face BertForMaskedLM with a word vocabulary, and small GLUE-style files, for the few-shot tests."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

WORDS = ["good", "bad", "great", "terrible", "movie", "film", "plot", "it", "was", "the", "a", "very", "not", "yes", "no", "?", ".", ","]
FILLER = [f"w{i}" for i in range(30)]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_rows(path: Path, rows: list[tuple[str, str]]) -> Path:
    path.write_text("sentence\tlabel\n" + "".join(f"{s}\t{y}\n" for s, y in rows))
    return path


def sentiment_rows(n: int, seed: int) -> list[tuple[str, str]]:
    """Sentences whose label is told by 'good' or 'bad' among filler words."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.choice(["negative", "positive"])
        words = rng.choices(FILLER, k=rng.randint(2, 6)) + ["good" if label == "positive" else "bad"]
        rng.shuffle(words)
        rows.append((" ".join(words), label))
    return rows


@pytest.fixture(scope="session")
def tiny_mlm(tmp_path_factory) -> Path:
    """A directory holding a random BertForMaskedLM (hidden 32, 2 layers) and its vocab.txt."""
    transformers = pytest.importorskip("transformers")
    root = tmp_path_factory.mktemp("fewshot")
    vocab = [*SPECIALS, *WORDS, *FILLER]
    cfg = transformers.BertConfig(vocab_size=len(vocab), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                  intermediate_size=37, max_position_embeddings=64, pad_token_id=0)
    torch.manual_seed(0)
    hf = transformers.BertForMaskedLM(cfg)
    with torch.no_grad():  # a non-zero output bias and LayerNorm affines, so a head left out would show
        for name, p in hf.named_parameters():
            if "LayerNorm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(root / "mlm")
    (root / "mlm" / "vocab.txt").write_text("\n".join(vocab) + "\n")
    write_rows(root / "train.tsv", sentiment_rows(80, 1))
    write_rows(root / "test.tsv", sentiment_rows(24, 2))
    return root

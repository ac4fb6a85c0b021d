"""``data.long=xl``: Transformer-XL memory across a document's chunks, against Hugging Face's BERT run once over the
whole document with the mask the recurrence implies (each chunk sees itself and the kept earlier chunks; positions
restart in every chunk), in float64."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from attnkit.hub.bert import load_hf_bert
from attnkit.models.bert_heads import BertClassifier
from attnkit.models.chunked import ChunkedClassifier, ChunkedConfig, chunk_ids, collate_chunks
from attnkit.errors import ConfigError

transformers = pytest.importorskip("transformers")

CLS, SEP, PAD = 1, 2, 0
CHUNK = 4  # tokens per chunk without [CLS]/[SEP]


@pytest.fixture(scope="module")
def hf_and_ours(tmp_path_factory: pytest.TempPathFactory) -> tuple[torch.nn.Module, BertClassifier]:
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=40, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64,
                                  max_position_embeddings=16, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
                                  pad_token_id=PAD, num_labels=3)
    hf = transformers.BertForSequenceClassification(cfg).eval()
    path = tmp_path_factory.mktemp("hf-bert")
    hf.save_pretrained(path)
    ours = load_hf_bert(Path(path))
    assert isinstance(ours, BertClassifier)
    return hf.double(), ours.double().eval()


def reference(hf: torch.nn.Module, chunks: list[list[int]], keep_back: int | None) -> torch.Tensor:
    """HF's logits read at the last chunk's [CLS], the chunks concatenated into one sequence; chunk i's queries see
    chunks i - keep_back .. i (every earlier chunk for None)."""
    ids = torch.tensor([[t for c in chunks for t in c]])
    of = torch.tensor([i for i, c in enumerate(chunks) for _ in c])  # the chunk of every position
    pos = torch.tensor([[p for c in chunks for p in range(len(c))]])
    see = of[None, :] <= of[:, None]
    if keep_back is not None:
        see &= of[None, :] >= of[:, None] - keep_back
    h = hf.bert(ids, attention_mask=see[None, None], position_ids=pos).last_hidden_state  # (1, T, H)
    start = sum(len(c) for c in chunks[:-1])
    return hf.classifier(hf.bert.pooler(h[:, start:]))  # the pooler reads its input's first row: the last [CLS]


@pytest.mark.parametrize("memory_len", [0, CHUNK + 2])
def test_xl_chunks_equal_one_pass_over_the_document(hf_and_ours, memory_len: int) -> None:
    hf, ours = hf_and_ours
    model = ChunkedClassifier.wrap(ours, "xl", memory_tokens=1, chunk_len=CHUNK, max_chunks=8, memory_len=memory_len).double().eval()
    gen = torch.Generator().manual_seed(1)
    docs = [[CLS, *torch.randint(3, 40, (n,), generator=gen).tolist(), SEP] for n in (13, 6, 3)]  # 4, 2 and 1 chunks
    chunked = [chunk_ids(d, CLS, SEP, CHUNK, 8) for d in docs]
    ids, mask, n = collate_chunks(chunked, PAD)
    with torch.no_grad():
        got = model(ids, mask, n).logits
        for row, chunks in enumerate(chunked):
            # the padded chunk length is CHUNK + 2 here, so memory_len = CHUNK + 2 keeps exactly the previous chunk
            want = reference(hf, chunks, None if memory_len == 0 else 1)
            torch.testing.assert_close(got[row : row + 1], want, rtol=1e-10, atol=1e-10)
    # one chunk: the encoder's own classifier
    torch.testing.assert_close(got[2:], ours(torch.tensor([docs[2]])).logits.detach(), rtol=1e-10, atol=1e-10)


def test_xl_memory_has_no_gradient_into_earlier_chunks(hf_and_ours) -> None:
    _, ours = hf_and_ours
    model = ChunkedClassifier.wrap(ours, "xl", memory_tokens=1, chunk_len=CHUNK, max_chunks=8).double().train()
    doc = [CLS, *range(3, 12), SEP]  # 3 chunks
    ids, mask, n = collate_chunks([chunk_ids(doc, CLS, SEP, CHUNK, 8)], PAD)
    emb = model.head.bert.embed.tokens.weight
    model(ids, mask, n).logits.sum().backward()
    assert emb.grad is not None
    first_only = sorted(set(ids[0, 0].tolist()) - set(ids[0, 2].tolist()))  # tokens of the first chunk alone
    assert torch.count_nonzero(emb.grad[first_only]) == 0  # the memory is stopped (Dai et al. 2019, SG)
    last_only = sorted(set(ids[0, 2].tolist()) - {CLS, SEP, PAD} - set(ids[0, 0].tolist()) - set(ids[0, 1].tolist()))
    assert all(torch.count_nonzero(emb.grad[t]) > 0 for t in last_only)


def test_memory_len_must_not_be_negative() -> None:
    with pytest.raises(ConfigError, match="memory_len"):
        ChunkedConfig(long="xl", memory_len=-1)

"""Chunked classification of long documents: a short document equals the unchunked model, and on documents whose
label needs both their first and last tokens, memory tokens carried across chunks beat truncation."""

from __future__ import annotations

import torch

from attnkit.models.bert import bert_preset
from attnkit.models.bert_heads import BertClassifier, BertTaskConfig
from attnkit.models.chunked import ChunkedClassifier, chunk_ids, collate_chunks

CLS, SEP, PAD, A, B = 1, 2, 0, 3, 4


def head(seed: int = 0, classifier: str = "cls_tanh") -> BertClassifier:
    torch.manual_seed(seed)
    enc = bert_preset("bert-tiny", vocab_size=16, d_model=32, n_heads=2, n_layers=1, d_ff=64, max_positions=32,
                      dropout=0.0, pooler=classifier == "pooler")
    return BertClassifier(BertTaskConfig(encoder=enc, num_labels=2, classifier=classifier, classifier_dropout=0.0))


def test_chunk_ids_cut_the_body() -> None:
    doc = [CLS, *range(5, 15), SEP]
    assert chunk_ids(doc, CLS, SEP, 4, 8) == [[CLS, 5, 6, 7, 8, SEP], [CLS, 9, 10, 11, 12, SEP], [CLS, 13, 14, SEP]]
    assert chunk_ids(doc, CLS, SEP, 4, 2) == [[CLS, 5, 6, 7, 8, SEP], [CLS, 9, 10, 11, 12, SEP]]


def test_short_document_equals_the_unchunked_model() -> None:
    for classifier in ("cls_tanh", "mean", "pooler"):
        h = head(classifier=classifier).eval()
        doc = [CLS, 5, 6, 7, SEP]
        want = h(torch.tensor([doc])).logits
        for mode in ("truncate", "average"):
            model = ChunkedClassifier.wrap(h, mode, memory_tokens=2, chunk_len=8, max_chunks=4).eval()
            ids, mask, n = collate_chunks([chunk_ids(doc, CLS, SEP, 8, 4)], PAD)
            torch.testing.assert_close(model(ids, mask, n).logits, want)
        # averaging a two-chunk document: the mean of the two chunks' logits
        model = ChunkedClassifier.wrap(h, "average", memory_tokens=2, chunk_len=2, max_chunks=4).eval()
        ids, mask, n = collate_chunks([chunk_ids(doc, CLS, SEP, 2, 4), chunk_ids([CLS, 5, SEP], CLS, SEP, 2, 4)], PAD)
        first = (h(torch.tensor([[CLS, 5, 6, SEP]])).logits + h(torch.tensor([[CLS, 7, SEP]])).logits) / 2
        torch.testing.assert_close(model(ids, mask, n).logits, torch.cat([first, h(torch.tensor([[CLS, 5, SEP]])).logits]))


def end_documents(n: int, length: int, gen: torch.Generator) -> tuple[list[list[int]], torch.Tensor]:
    """Documents [CLS] f x ... x l [SEP]: f, l in {A, B}, filler from 5..15; label 1 iff f = l = A."""
    docs, labels = [], []
    for _ in range(n):
        f, last = (A if torch.rand((), generator=gen) < 0.5 else B), (A if torch.rand((), generator=gen) < 0.5 else B)
        filler = torch.randint(5, 16, (length - 2,), generator=gen).tolist()
        docs.append([CLS, f, *filler, last, SEP])
        labels.append(int(f == A and last == A))
    return docs, torch.tensor(labels)


def accuracy_after_training(mode: str, steps: int) -> float:
    gen = torch.Generator().manual_seed(0)
    model = ChunkedClassifier.wrap(head(1), mode, memory_tokens=2, chunk_len=6, max_chunks=4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(steps):
        docs, y = end_documents(32, 12, gen)  # 2 chunks of 6: f in the first, l in the last
        ids, mask, n = collate_chunks([chunk_ids(d, CLS, SEP, 6, 4) for d in docs], PAD)
        loss = torch.nn.functional.cross_entropy(model(ids, mask, n).logits, y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    docs, y = end_documents(256, 12, torch.Generator().manual_seed(99))
    ids, mask, n = collate_chunks([chunk_ids(d, CLS, SEP, 6, 4) for d in docs], PAD)
    with torch.no_grad():
        return float((model(ids, mask, n).logits.argmax(-1) == y).float().mean())


def test_memory_beats_truncation() -> None:
    memory = accuracy_after_training("memory", steps=80)
    truncate = accuracy_after_training("truncate", steps=40)
    assert truncate < 0.82, truncate  # the first chunk alone: at best 3/4 (right whenever f = B)
    assert memory > 0.95, memory


def test_the_memory_starts_as_the_cls_embedding_and_the_document_is_read_from_it() -> None:
    h = head(classifier="mean").eval()
    torch.manual_seed(3)
    plain = ChunkedClassifier.wrap(h, "memory", memory_tokens=2, chunk_len=3, max_chunks=4)
    torch.manual_seed(3)
    model = ChunkedClassifier.wrap(h, "memory", memory_tokens=2, chunk_len=3, max_chunks=4, cls_id=CLS).eval()
    first = h.bert.embed(torch.tensor([[CLS]]))[0, 0]
    torch.testing.assert_close(model.memory, plain.memory + first)
    # the reference: chunk by chunk by hand, the classifier on the mean of the memory states after the last chunk
    doc = [CLS, 5, 6, 7, 8, SEP]
    ids, mask, n = collate_chunks([chunk_ids(doc, CLS, SEP, 3, 4)], PAD)
    mem = model.memory[None]
    for chunk in ([CLS, 5, 6, 7, SEP], [CLS, 8, SEP]):
        x = torch.cat([mem, h.bert.embed(torch.tensor([chunk]))], dim=1)
        for layer in h.bert.layers:
            x, _ = layer(x, None)
        mem = x[:, :2]
    want = h.out(mem.mean(1))
    torch.testing.assert_close(model(ids, mask, n).logits, want)

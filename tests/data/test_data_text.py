"""Text for language modelling: reading, char and byte-level BPE tokenizers, split, LM task."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer

from attnkit.data.lm import LMTask
from attnkit.data.text import encode, read_text, split_tokens, text_tokenizer, train_bpe
from attnkit.data.tokenizer import SPECIALS
from attnkit.errors import DataError
from attnkit.models.gpt import GPT, gpt_preset

TEXT = "First Citizen:\nBefore we proceed any further, hear me speak.\n\nAll:\nSpeak, speak.\n" * 20


def test_read_text_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        read_text(tmp_path / "nope.txt")
    (tmp_path / "empty.txt").write_text("  \n")
    with pytest.raises(DataError, match="empty"):
        read_text(tmp_path / "empty.txt")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 au lait".encode("latin-1"))
    with pytest.raises(DataError, match=r"not UTF-8 text \(byte 0xe9 at offset 3\)"):
        read_text(tmp_path / "latin1.txt")
    (tmp_path / "ok.txt").write_text("héllo\n\nwörld", encoding="utf-8")
    assert read_text(tmp_path / "ok.txt") == "héllo\n\nwörld"


def test_char_tokenizer_round_trip_and_unknown_characters():
    tok = text_tokenizer(TEXT, "char")
    assert [tok.token_to_id(s) for s in SPECIALS] == [0, 1, 2, 3]
    assert tok.get_vocab_size() == len(set(TEXT)) + len(SPECIALS)
    ids = encode(tok, TEXT)
    assert len(ids) == len(TEXT) and tok.decode(ids) == TEXT  # "\n\n" included
    assert ids == tok.encode(TEXT).ids  # the fast path equals the tokenizers library
    with pytest.raises(DataError, match=r"2 character\(s\) outside the model's vocabulary: 'Q', 'é'"):
        encode(tok, "Qéa", what="prompt")


def test_byte_level_bpe_learns_merges_and_round_trips(tmp_path):
    tok = train_bpe(TEXT, 300)
    assert [tok.token_to_id(s) for s in SPECIALS] == [0, 1, 2, 3]
    assert tok.get_vocab_size() <= 300
    ids = encode(tok, TEXT)
    assert len(ids) < len(TEXT) / 2  # merges learned
    assert tok.decode(ids) == TEXT
    unseen = "Zürich ✓ 😀"
    assert tok.decode(encode(tok, unseen)) == unseen  # bytes: nothing is unknown
    tok.save(str(tmp_path / "t.json"))
    assert Tokenizer.from_file(str(tmp_path / "t.json")).encode(TEXT).ids == ids
    with pytest.raises(DataError, match="at least 260"):
        train_bpe(TEXT, 100)


def test_split_is_90_10_and_too_short_text_is_named():
    train, valid = split_tokens(list(range(1000)), context=16)
    assert train.tolist() == list(range(900)) and valid.tolist() == list(range(900, 1000))
    with pytest.raises(DataError, match="shorter than one window of context\\+1=257"):
        split_tokens(list(range(1000)), context=256)


def test_lm_task_batches_are_shifted_windows_and_reproducible():
    data = torch.arange(500)
    task = LMTask(data[:450], data[450:], context=8, batch_size=4, log=lambda s: None)
    a = list(task.batches(epoch=0, seed=1))
    b = list(task.batches(epoch=0, seed=1))
    assert len(a) == 450 // 32 and all(torch.equal(x, y) for x, y in zip(a, b))
    w = a[0]
    assert w.shape == (4, 9) and torch.equal(w[:, 1:] - w[:, :-1], torch.ones(4, 8, dtype=torch.long))
    torch.manual_seed(0)
    model = GPT(gpt_preset("gpt-tiny", vocab_size=500, context=8)).eval()
    with torch.no_grad():
        got = task.evaluate(model)["loss"]
        windows = data[450:498].view(6, 8)
        targets = data[451:499].view(6, 8)
        ref = torch.nn.functional.cross_entropy(model(windows).logits.reshape(-1, 500), targets.reshape(-1))
    assert got == pytest.approx(float(ref), rel=1e-5)

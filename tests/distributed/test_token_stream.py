"""The memory-mapped token file: exactly the ids of in-memory tokenisation, windows equal to indexing
the in-memory tensor, shards by rank that partition one run's batches, and train lm on it."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from attnkit.cli.main import main
from attnkit.data.stream import StreamLMTask, TokenFile, TokenWindows, header_path, write_token_file
from attnkit.data.text import encode, read_text, text_tokenizer
from attnkit.errors import DataError

TEXTS = ["It was the best of times, it was the worst of times,\nit was the age of wisdom.\n",
         "Call me Ishmael. Some years ago - never mind how long precisely -\n" * 3,
         "Happy families are all alike; every unhappy family is unhappy in its own way.\n" * 2]


@pytest.fixture(params=["char", "bpe"])
def corpus(request, tmp_path):
    files = []
    for i, text in enumerate(TEXTS):
        files.append(tmp_path / f"doc{i}.txt")
        files[-1].write_text(text)
    tok = text_tokenizer("".join(TEXTS), request.param, 300)
    tok.save(str(tmp_path / "tokenizer.json"))
    out = tmp_path / "corpus.bin"
    assert main(["data", "prepare", "--tokenizer", str(tmp_path / "tokenizer.json"), *map(str, files), "--out", str(out)]) == 0
    want = torch.tensor([i for f in files for i in encode(tok, read_text(f))])
    return out, want, tmp_path


def test_the_file_holds_exactly_the_in_memory_ids(corpus):
    out, want, _ = corpus
    f = TokenFile(out)
    assert f.header["dtype"] == "uint16" and f.header["count"] == len(want) == out.stat().st_size // 2
    assert isinstance(f.tokens, np.memmap)
    assert torch.equal(f.read(0, len(f)), want)


def test_windows_equal_indexing_the_in_memory_tensor(corpus):
    out, want, _ = corpus
    windows = TokenWindows(TokenFile(out), context=8, batch_size=5, limit=len(want) - 3)
    for i in range(3):
        starts = windows.starts(seed=7, epoch=1, index=i)
        assert int(starts.max()) < len(want) - 3 - 8
        assert torch.equal(windows.batch(starts), want[starts[:, None] + torch.arange(9)])  # (B, T+1)


def test_rank_shards_partition_one_run_and_repeat_exactly(corpus):
    out, _, _ = corpus
    def make():
        return TokenWindows(TokenFile(out), context=4, batch_size=2)

    one = list(make().batches(epoch=0, seed=3))
    assert len(one) == make().batches_per_epoch() >= 4
    shards = [list(make().batches(epoch=0, seed=3, rank=r, world=2)) for r in (0, 1)]
    assert all(torch.equal(a, b) for a, b in zip(one[0::2], shards[0])) and len(shards[0]) == len(one[0::2])
    assert all(torch.equal(a, b) for a, b in zip(one[1::2], shards[1])) and len(shards[1]) == len(one[1::2])
    assert not torch.equal(one[0], list(make().batches(epoch=1, seed=3))[0])  # another epoch, other windows


def test_large_vocabularies_take_uint32(tmp_path):
    tok = tmp_path / "tok.json"
    tok.write_text("{}")
    ids = [[0, 65535, 65536], [69_999]]
    header = write_token_file(tmp_path / "big.bin", iter(ids), vocab_size=70_000, tokenizer=tok, files=[])
    assert header["dtype"] == "uint32"
    assert TokenFile(tmp_path / "big.bin").read(0, 4).tolist() == [0, 65535, 65536, 69_999]
    with pytest.raises(DataError, match="outside the tokenizer's vocabulary"):
        write_token_file(tmp_path / "bad.bin", iter([[70_000]]), vocab_size=70_000, tokenizer=tok, files=[])


def test_truncated_file_and_other_tokenizer_are_refused(corpus):
    out, _, tmp = corpus
    other = tmp / "other.json"
    text_tokenizer("abc", "char").save(str(other))
    with pytest.raises(DataError, match="is not the tokenizer"):
        TokenFile(out).check_tokenizer(other)
    out.write_bytes(out.read_bytes()[:-2])
    with pytest.raises(DataError, match="truncated"):
        TokenFile(out)
    header_path(out).unlink()
    with pytest.raises(DataError, match="attnkit data prepare"):
        TokenFile(out)


def test_train_lm_on_a_token_file(corpus):
    """The run path on data.tokens: the stream task's windows, its tokenizer saved with the model."""
    from attnkit.runs import job, resolve_configs, run

    out, want, tmp = corpus
    j = job("lm")
    cfgs = resolve_configs(j, assignments=[f"data.tokens={out}", "model.n_layers=1", "model.d_model=16", "model.n_heads=2",
                                           "model.context=8", "train.steps=3", "train.batch_size=2", "train.device=cpu",
                                           "train.eval.every=3", "data.sample_tokens=0", "train.schedule.warmup=1"])
    report = run(j, cfgs, tmp / "run", progress=False, log=lambda line: None)
    assert report.result.step == 3 and (tmp / "run" / "model" / "model.safetensors").is_file()
    assert (tmp / "run" / "tokenizer.json").read_bytes() == (tmp / "tokenizer.json").read_bytes()
    task = StreamLMTask(TokenFile(out), context=8, batch_size=2)
    assert task.split == int(len(want) * 0.9)
    starts = next(task.batches(0, 0))
    assert torch.equal(task.train.batch(starts), want[starts[:, None] + torch.arange(9)])
    assert json.loads((tmp / "run" / "run_config.json").read_text())["data"]["tokens"] == str(out)


def test_a_token_file_does_not_continue_a_model(corpus):
    from attnkit.errors import ConfigError
    from attnkit.runs import job, resolve_configs, run

    out, _, tmp = corpus
    j = job("lm")
    cfgs = resolve_configs(j, assignments=[f"data.tokens={out}", f"data.model={tmp}", "train.device=cpu"])
    with pytest.raises(ConfigError, match="data.tokens trains a new GPT"):
        run(j, cfgs, tmp / "run", progress=False, log=lambda line: None)

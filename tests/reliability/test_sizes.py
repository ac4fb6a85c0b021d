"""Sizes a config, a flag or a checkpoint can set are checked before anything is allocated.

Every case refuses with one line and exit 2 (the harness); none of them allocates the memory it
would need, so each runs in a fraction of a second beyond the CLI's start-up.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tests.reliability.harness import assert_user_error, run_cli

REV_SMALL = ["--no-progress", "--set", "data.n_train=16", "--set", "data.n_valid=4", "--set", "train.steps=1", "--set", "train.device=cpu"]


def edit_config(model_dir: Path, **changes) -> None:
    """Change keys of ``model_dir/config.json`` (nested keys as ``a__b``)."""
    path = model_dir / "config.json"
    data = json.loads(path.read_text())
    for key, value in changes.items():
        *parents, last = key.split("__")
        node = data
        for p in parents:
            node = node[p]
        node[last] = value
    path.write_text(json.dumps(data))


def rewrite_weights(model_dir: Path, change) -> None:
    path = model_dir / "model.safetensors"
    state = load_file(str(path))
    save_file({k: change(k, v) for k, v in state.items()}, str(path), metadata={"format": "pt"})


# -- the safetensors header is compared with the config before the model is built -------------------------


@pytest.mark.parametrize("vocab", [10**11, 4 * 10**7], ids=["M27-vocab-1e11", "M28-vocab-4e7"])
def test_config_vocab_differs_from_weights(work, vocab):
    edit_config(work / "lm" / "model", vocab_size=vocab)
    assert_user_error("info lm/model", work, "tok_embed.weight", f"({vocab}, 16)", "has shape (")


def test_M29_huge_max_len_refused_by_size(work):
    """Sinusoidal positions are not stored, so the header matches; the size guard names max_len and the limit."""
    edit_config(work / "rev" / "model", max_len=10**10)
    assert_user_error("info rev/model", work, "max_len=10000000000", "more than the", "available")


def test_learned_positions_larger_than_stored(work):
    edit_config(work / "lm" / "model", context=10**9)
    assert_user_error("info lm/model", work, "positions.embedding.weight", "(1000000000, 16)")


def test_M33_lsh_hash_rounds_bounded(work):
    edit_config(work / "rev" / "model", attention={"kind": "lsh", "dropout": 0.0, "params": {"n_hashes": 10**7}})
    assert_user_error(["translate", "--model", "rev/model", "--beam", "1", "0123"], work, "n_hashes=10000000", "limit of 64")


def test_M34_nan_weights_refused(work):
    rewrite_weights(work / "rev" / "model", lambda k, v: torch.full_like(v, float("nan")) if v.is_floating_point() else v)
    assert_user_error(["translate", "--model", "rev/model", "--beam", "1", "0123"], work, "NaN or infinite")


def test_one_inf_weight_refused(work):
    def poison(k, v):
        if v.is_floating_point() and v.dim() == 2:
            v = v.clone()
            v[0, 0] = float("inf")
        return v

    rewrite_weights(work / "lm" / "model", poison)
    assert_user_error("info lm/model", work, "NaN or infinite")


def test_M21_int8_weights_refused(work):
    rewrite_weights(work / "lm" / "model", lambda k, v: v.to(torch.int8) if v.is_floating_point() else v)
    assert_user_error("info lm/model", work, "I8", "not floating point")


def test_stored_shape_differs(work):
    """A weight whose stored shape differs (same key) names the key and both shapes, from the header alone."""
    rewrite_weights(work / "lm" / "model", lambda k, v: v[:-1] if k == "tok_embed.weight" else v)
    out = assert_user_error("info lm/model", work, "tok_embed.weight", "has shape (")
    assert "the config implies" in out.stderr


# -- a new run is refused before it builds a model that cannot fit -----------------------------------------


def test_C14_shared_vocab_too_large(work):
    assert_user_error(["train", "reverse", *REV_SMALL, "--set", "model.src_vocab_size=100000000000",
                       "--set", "model.tgt_vocab_size=100000000000", "--out", "o/c14"], work,
                      "model.src_vocab_size=100000000000", "more than the")
    assert not (work / "o").exists()


def test_C14b_config_file_vocab_too_large(work):
    (work / "cfg.json").write_text(json.dumps({"model": {"src_vocab_size": 10**11, "tgt_vocab_size": 10**11}}))
    assert_user_error(["train", "reverse", *REV_SMALL, "--config", "cfg.json", "--out", "o/c14b"], work,
                      "src_vocab_size=100000000000", "more than the")


def test_huge_max_len_new_run(work):
    assert_user_error(["train", "reverse", *REV_SMALL, "--set", "model.max_len=10000000000", "--out", "o/x"], work,
                      "model.max_len=10000000000", "more than the")


def test_huge_lm_width_new_run(work):
    assert_user_error(["train", "lm", "--text", "text.txt", "--sample-tokens", "0", "--no-progress", "--set", "model.d_model=131072",
                       "--set", "model.n_layers=1", "--set", "model.n_heads=2", "--set", "train.device=cpu", "--out", "o/x"], work,
                      "more than the", "available")


def test_check_size_counts_and_names_the_key():
    """The meta-device estimate equals the real model's bytes, and a model over the limit names its key."""
    from attnkit.errors import ConfigError
    from attnkit.models import GPT, GPTConfig
    from attnkit.models.base import check_size, model_bytes

    cfg = GPTConfig(vocab_size=50, context=12, d_model=16, n_heads=2, n_layers=1)
    real = GPT(cfg)
    expected = sum(p.numel() * 4 for p in real.parameters()) + sum(b.numel() * b.element_size() for b in real.buffers())
    assert model_bytes(check_size(GPT, cfg)) == expected
    with pytest.raises(ConfigError, match=r"model\.vocab_size=10000000000000 makes tok_embed\.weight"):
        check_size(GPT, cfg.replace(vocab_size=10**13))


def test_lsh_bounds_in_api():
    from attnkit.attention.lsh import LSHAttention

    with pytest.raises(ValueError, match="n_buckets=131072 is above the limit"):
        LSHAttention(n_buckets=1 << 17)
    LSHAttention(n_hashes=64, n_buckets=1 << 16)  # the limits themselves are allowed


def test_good_model_still_loads(work):
    out = run_cli("info lm/model", work)
    assert out.code == 0, out.stderr


@pytest.mark.parametrize("family", ["gpt2", "bert"])
def test_hf_config_vocab_differs_from_weights(tmp_path, family):
    """A Hugging Face directory whose config.json claims 10^11 tokens is refused from the shapes, allocating nothing."""
    import attnkit
    from attnkit.errors import CheckpointError
    from attnkit.hub.bert import save_hf_bert
    from attnkit.hub.gpt2 import save_hf_gpt2
    from attnkit.models import GPT, BertModel, GPTConfig, bert_preset

    if family == "gpt2":
        save_hf_gpt2(GPT(GPTConfig(vocab_size=50, context=12, d_model=16, n_heads=2, n_layers=1)), tmp_path / "m")
    else:
        save_hf_bert(BertModel(bert_preset("bert-test")), tmp_path / "m")
    edit_config(tmp_path / "m", vocab_size=10**11)
    with pytest.raises(CheckpointError, match="100000000000"):
        attnkit.load(tmp_path / "m")


# -- tokenizer vocabularies are bounded before a trainer reserves memory ------------------------------------


@pytest.mark.parametrize("kind", ["bpe", "unigram", "wordpiece"])
def test_T04_tokenizer_train_vocab_bounded(work, kind):
    assert_user_error(["tokenizer", "train", "--kind", kind, "--vocab-size", "1000000000", "--out", "t.json", "text.txt"], work,
                      "--vocab-size=1000000000", "limit of 1,000,000")
    assert not (work / "t.json").exists()


def test_T06_train_lm_bpe_vocab_bounded(work):
    assert_user_error(["train", "lm", "--text", "text.txt", "--tokenizer", "bpe", "--vocab-size", "1000000000", "--sample-tokens", "0",
                       "--no-progress", "--set", "train.device=cpu", "--out", "o/t06"], work, "data.vocab_size=1000000000", "limit of 1,000,000")


def test_vocab_bound_in_api():
    """Translation (data.vocab_size reaches train_subword_tokenizer) and masked-LM pre-training refuse it before training."""
    from attnkit.data.subword import train_subword_tokenizer
    from attnkit.errors import DataError
    from attnkit.runs.mlm import learn_tokenizer

    with pytest.raises(DataError, match=r"data\.vocab_size=1000001 is above the limit"):
        train_subword_tokenizer(["a b c"], 1_000_001, "bpe", what="data.vocab_size")
    with pytest.raises(DataError, match=r"data\.vocab_size=5000000 is above the limit"):
        learn_tokenizer([["a b c"]], 5_000_000, cased=False)
    assert train_subword_tokenizer(["a b c"] * 5, 1_000_000, "bpe").get_vocab_size() < 1000  # the limit itself is allowed


# -- the tokenizer is checked against the model wherever both meet -----------------------------------------


def _bpe_tokenizer(path: Path, size: int = 300) -> None:
    from attnkit.data.subword import train_subword_tokenizer

    text = ["Ein Mann fährt Fahrrad.", "A man rides a bicycle.", "Zwei Hunde spielen im Schnee."] * 20
    train_subword_tokenizer(text, size, "bpe").save(str(path))


def test_K01_generate_tokenizer_larger_than_model(work):
    _bpe_tokenizer(work / "lm" / "model" / "tokenizer.json")
    assert_user_error(["generate", "--model", "lm/model", "--prompt", "To be", "--max-new-tokens", "3", "--seed", "0"], work,
                      "tokenizer has", "vocab_size is")


def test_K11_translate_tokenizer_larger_than_model(work):
    _bpe_tokenizer(work / "rev" / "model" / "tokenizer.json")
    assert_user_error(["translate", "--model", "rev/model", "Ein Mann"], work, "tokenizer has", "src_vocab_size is")


def test_K06_translate_tokenizer_of_another_smaller_model(work):
    """The char tokenizer of ``lm/`` has the same specials at 0-3 but other tokens: refused by its size."""
    import shutil

    shutil.copy(work / "lm" / "model" / "tokenizer.json", work / "rev" / "model" / "tokenizer.json")
    lm_size = len(json.loads((work / "lm" / "model" / "tokenizer.json").read_text())["model"]["vocab"])
    rev_size = json.loads((work / "rev" / "model" / "config.json").read_text())["src_vocab_size"]
    assert lm_size != rev_size
    assert_user_error(["translate", "--model", "rev/model", "0123"], work, f"has {lm_size} tokens", f"is {rev_size}")


def test_special_ids_differ(work):
    """A model whose eos_id names another token than the tokenizer's </s> is refused."""
    edit_config(work / "rev" / "model", eos_id=5)
    assert_user_error(["translate", "--model", "rev/model", "0123"], work, "eos_id is 5", "'</s>'")


def test_check_against_model_api():
    from attnkit.data.tokenizer import char_tokenizer, check_against_model
    from attnkit.errors import CheckpointError
    from attnkit.models import GPTConfig

    tok = char_tokenizer("abc")  # 4 specials + 3 characters
    check_against_model(tok, GPTConfig(vocab_size=7, context=8, d_model=8, n_heads=2, n_layers=1), "t")
    for vocab in (6, 8):
        with pytest.raises(CheckpointError, match=f"has 7 tokens but the model's vocab_size is {vocab}"):
            check_against_model(tok, GPTConfig(vocab_size=vocab, context=8, d_model=8, n_heads=2, n_layers=1), "t")


# -- generate decodes prompts in batches of --batch-size -----------------------------------------------------


def test_generate_batches_equal_one_by_one(work):
    """Greedy continuations are the same whether prompts go one at a time or three together."""
    prompts = ["To be", "Whether 'tis", "the question", "mind", "or not to"]
    args = ["generate", "--model", "lm/model", "--greedy", "--max-new-tokens", "6"] + [a for p in prompts for a in ("--prompt", p)]
    one = run_cli(args + ["--batch-size", "1"], work)
    three = run_cli(args + ["--batch-size", "3"], work)
    assert one.code == 0 and three.code == 0, one.stderr + three.stderr
    blocks = [b.strip() for b in one.stdout.split("-" * 40) if b.strip()]
    assert len(blocks) == len(prompts) and all(b.startswith(p) for b, p in zip(blocks, prompts))
    assert one.stdout == three.stdout


def test_generate_batch_size_checked(work):
    assert_user_error(["generate", "--model", "lm/model", "--prompt", "a", "--prompt", "b", "--batch-size", "0"], work, "--batch-size 0")


def test_generate_splits_into_batches(work, monkeypatch):
    """2,000 prompts never go into one batch: ``generate`` is called with at most --batch-size rows."""
    import argparse

    import attnkit.generation.sampling as sampling
    from attnkit.cli import generate as cli_generate

    sizes = []
    real = sampling.generate

    def spy(model, prompts, cfg, **kw):
        sizes.append(len(prompts))
        return real(model, prompts, cfg, **kw)

    monkeypatch.setattr(sampling, "generate", spy)
    monkeypatch.chdir(work)
    ns = argparse.Namespace(model=Path("lm/model"), prompt=["To be"] * 70, max_new_tokens=1, temperature=0.0, greedy=True, top_k=None,
                            top_p=None, seed=0, stop=[], device="cpu", compile=False, batch_size=32)
    assert cli_generate.run(ns) == 0
    assert sizes == [32, 32, 6]


@pytest.mark.parametrize("cmd,key", [
    (["train", "reverse", *REV_SMALL, "--set", "model.n_encoder_layers=10000000", "--out", "o/x"], "n_encoder_layers=10000000"),
    (["train", "lm", "--text", "text.txt", "--no-progress", "--set", "model.n_layers=10000000", "--out", "o/x"], "n_layers=10000000"),
], ids=["seq2seq", "lm"])
def test_layer_count_bounded(work, cmd, key):
    """Ten million layers would take hours to build even shapes-only: the config refuses them."""
    assert_user_error(cmd, work, key, "1024")


def test_layer_count_in_checkpoint_bounded(work):
    edit_config(work / "lm" / "model", n_layers=10**7)
    assert_user_error("info lm/model", work, "n_layers=10000000", "1024")


def test_cuda_limit_is_the_free_device_memory(monkeypatch):
    """On CUDA the limit is the device's free memory (faked here: 1 MB free of 80 GB)."""
    from attnkit.errors import ConfigError
    from attnkit.models import GPT, GPTConfig
    from attnkit.models.base import available_memory, check_size

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10**6, 80 * 10**9))
    assert available_memory("cuda:0") == (10**6, "free on cuda:0")
    with pytest.raises(ConfigError, match=r"model\.vocab_size=100000 makes tok_embed\.weight \(100000, 16\).*1\.0 MB free on cuda:0"):
        check_size(GPT, GPTConfig(vocab_size=100_000, context=8, d_model=16, n_heads=2, n_layers=1), "cuda:0")
    check_size(GPT, GPTConfig(vocab_size=100, context=8, d_model=16, n_heads=2, n_layers=1), "cuda:0")


def test_address_space_limit_is_respected():
    """Under ``ulimit -v`` a model that fits in RAM but not under the limit is refused (not killed by the allocator)."""
    import resource
    import subprocess
    import sys

    from attnkit.models.base import available_memory

    if available_memory("cpu")[0] < 8 << 30:
        pytest.skip("needs 8 GB of available RAM to tell the address-space limit from RAM")
    code = ("from attnkit.models import GPT, GPTConfig\nfrom attnkit.models.base import check_size\n"
            "check_size(GPT, GPTConfig(vocab_size=8 * 10**7, context=8, d_model=16, n_heads=2, n_layers=1))\n")  # 5.1 GB of embeddings

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))

    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, preexec_fn=limit, timeout=60,
                          cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode != 0 and "ConfigError" in proc.stderr, proc.stderr[-1500:]
    assert "vocab_size=80000000" in proc.stderr and "ulimit -v" in proc.stderr, proc.stderr[-1500:]

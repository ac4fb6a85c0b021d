"""``attnkit train mlm --text FILE [--model DIR]``: pretrain a BERT on your own text, or continue pretraining one
(masked LM, optionally + NSP or SOP).

Documents are the blank-line-separated paragraphs of the text (``--documents files``: one
document per file) and sentences its non-empty lines (``--sentences punct``: lines also cut
after ``.``, ``!``, ``?``). Sentences are packed in document order into
``[CLS] A [SEP] B [SEP]`` sequences of at most ``--max-seq-len`` tokens
(:mod:`attnkit.data.pretraining`). ``--nsp`` adds BERT's next-sentence prediction (50% IsNext,
50% NotNext from another document), ``--sop`` ALBERT's sentence-order prediction (50% swapped);
without either the model learns masked LM alone on full-sentence sequences (RoBERTa).
Masking is BERT's (15% of tokens; 80% [MASK], 10% random, 10% kept), drawn anew for every
batch; ``--whole-word`` masks whole words.

From scratch (no ``--model``): without ``--tokenizer`` (a ``tokenizer.json`` or BERT
``vocab.txt``) a WordPiece vocabulary of ``--vocab-size`` tokens is learned from the text.
The model starts from ``--preset`` (default ``bert-tiny``) with its vocabulary set to the
tokenizer's. The recipe follows BERT (appendix A.2: AdamW, betas (0.9, 0.999), weight decay
0.01, warm-up then linear decay, no label smoothing) with a learning rate and length for
small models (lr 5e-4, 2000 steps of 32 sequences, 100 warm-up steps).

Continued pretraining (``--model DIR``): task-adaptive pretraining (TAPT) of Gururangan et al.
2020, "Don't Stop Pretraining: Adapt Language Models to Domains and Tasks", section 4: keep
training a published encoder with masked LM on the task's own unlabelled text, then fine-tune.
``DIR`` is an attnkit model directory or a Hugging Face BERT-family directory
(``config.json`` + ``model.safetensors``) read by ``attnkit.load``: a bare encoder, any head
on one, or a masked-LM / pretraining model. Its encoder is copied (strictly: every key and
shape) into the pretraining model; so is its masked-LM head when it has one (an attnkit
``BertPretraining`` or ``BertMLM``, a Hugging Face ``BertForMaskedLM`` or
``BertForPreTraining``), and its NSP/SOP classifier when an attnkit ``BertPretraining``
trained the same pair task. Otherwise those start fresh, and a line says so; the masked-LM
decoder is tied to the word embeddings, so a fresh head is a dense layer, a LayerNorm and an
output bias. The tokenizer is ``DIR``'s (``tokenizer.json`` or ``vocab.txt``) unless
``--tokenizer`` is given, and must have exactly the model's vocabulary size and [PAD] id.
The architecture is the checkpoint's: ``--preset``, ``--vocab-size`` and ``--cased`` are
refused, and ``--set model.KEY=...`` may change only ``dropout`` and ``attention.dropout``.
The recipe is BERT's above with TAPT's learning rate, 1e-4, and warm-up over the first 6% of
``train.steps`` (the paper's adaptive-pretraining hyperparameters; its released TAPT command,
``ADAPTIVE_PRETRAINING.md`` of allenai/dont-stop-pretraining, trains RoBERTa 100 epochs of
batch 16 x 16 = 256 at lr 1e-4; ``--set`` sets steps, batch and betas). The held-out
loss of the loaded model is printed before training and saved in ``OUT/start_eval.json``.
A sentence-transformers checkpoint's pooling (``modules.json`` and its ``*_Pooling/config.json``)
is copied into ``OUT/model``, so ``attnkit finetune classify --model OUT/model`` pools as the
source was trained (all-MiniLM-L6-v2: mean pooling).

Either way, the last ``data.valid_fraction`` of the documents are held out: every
``train.eval_every`` steps the masked-LM loss and accuracy and the NSP/SOP accuracy on them
are printed, and the best model (lowest summed loss) is saved in ``OUT/model`` with its
tokenizer; ``attnkit.load`` reads it back as a ``BertPretraining`` whose encoder is ``.bert``,
and ``attnkit finetune classify|ner|qa --model OUT/model`` fine-tunes that encoder.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from attnkit.cli.common import add_set_argument, apply_overrides, progress_writer, report_training
from attnkit.errors import CheckpointError, ConfigError, DataError

DEFAULT_TRAIN = dict(
    steps=2000, batch_size=32, optimizer="adamw", lr=5e-4, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.01,
    schedule="linear", warmup=100, clip_norm=1.0, eval_every=200, log_every=50, label_smoothing=0.0, compile=False,
)
# --model: TAPT's learning rate (Gururangan et al. 2020); warm-up is CONTINUED_WARMUP of the steps unless set
CONTINUED_TRAIN = {**DEFAULT_TRAIN, "lr": 1e-4, "warmup": 0}
CONTINUED_WARMUP = 0.06
ADJUSTABLE = ("dropout", "attention.dropout")  # the model keys --set may change with --model
DEFAULT_PRESET, DEFAULT_VOCAB_SIZE = "bert-tiny", 8000


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--text", type=Path, nargs="+", required=True, help="UTF-8 text file(s) to pretrain on")
    p.add_argument("--model", type=Path, default=None, metavar="DIR",
                   help="continue pretraining this attnkit or Hugging Face BERT-family directory (default: a fresh --preset)")
    p.add_argument("--tokenizer", type=Path,
                   help="tokenizer.json or vocab.txt (default: the one in --model, else learn WordPiece from the text)")
    p.add_argument("--vocab-size", type=int, default=None,
                   help=f"size of the learned WordPiece vocabulary (default: {DEFAULT_VOCAB_SIZE}; not with --model)")
    p.add_argument("--cased", action="store_true",
                   help="learned vocabulary keeps case and accents (default: lower-cased; not with --model)")
    p.add_argument("--preset", default=None, help=f"BERT preset (default: {DEFAULT_PRESET}; not with --model)")
    pair = p.add_mutually_exclusive_group()
    pair.add_argument("--nsp", action="store_const", dest="pair_task", const="nsp", help="add next-sentence prediction (BERT)")
    pair.add_argument("--sop", action="store_const", dest="pair_task", const="sop", help="add sentence-order prediction (ALBERT)")
    p.set_defaults(pair_task="none")
    p.add_argument("--whole-word", action="store_true", help="mask whole words (every piece of a chosen word)")
    p.add_argument("--max-seq-len", type=int, default=None, help="tokens per sequence, specials included (default: 128)")
    p.add_argument("--documents", choices=("paragraphs", "files"), default=None, help="what a document is (default: paragraphs)")
    p.add_argument("--sentences", choices=("lines", "punct"), default=None, help="what a sentence is (default: lines)")
    p.add_argument("--out", type=Path, default=Path("runs/mlm"), help="output directory (default: runs/mlm)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_set_argument(p)


def check_flags(args: argparse.Namespace) -> None:
    """``--model`` brings its own architecture, vocabulary and casing: refuse the flags that would choose them."""
    if args.model is None:
        return
    given = [flag for flag, value in (("--preset", args.preset), ("--vocab-size", args.vocab_size), ("--cased", args.cased or None))
             if value is not None]
    if given:
        raise ConfigError(f"--model takes the architecture and vocabulary from {args.model}; leave out {', '.join(given)}")


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested config dict with dotted keys (``attention.dropout``); ``attention.params`` stays one value."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        out.update(_flat(v, f"{prefix}{k}.") if isinstance(v, dict) and k != "params" else {f"{prefix}{k}": v})
    return out


def build_configs(args: argparse.Namespace, tok: Any, encoder: Any = None) -> dict[str, Any]:
    """``model`` (BertConfig), ``train``, ``data`` and ``masking`` configs, ``--set`` applied and checked against the tokenizer.

    Args:
        encoder: the :class:`~attnkit.models.bert.BertConfig` of ``--model``'s encoder, or None to start from ``--preset``.
    """
    from attnkit.data.pretraining import PretrainingDataConfig
    from attnkit.models.bert import bert_preset
    from attnkit.objectives.mlm import MaskingConfig
    from attnkit.training.config import TrainConfig

    if encoder is None:
        try:
            model_cfg = bert_preset(args.preset or DEFAULT_PRESET, vocab_size=tok.vocab_size, pad_id=tok.pad_id)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    else:
        model_cfg = encoder
    data = {k: v for k, v in (("max_seq_len", args.max_seq_len), ("documents", args.documents), ("sentences", args.sentences)) if v is not None}
    cfgs = apply_overrides(args.set, {
        "model": model_cfg, "train": TrainConfig(**(DEFAULT_TRAIN if encoder is None else CONTINUED_TRAIN)),
        "data": PretrainingDataConfig(**data), "masking": MaskingConfig(whole_word=args.whole_word),
    })
    m, d, t = cfgs["model"], cfgs["data"], cfgs["train"]
    source = f"preset {args.preset or DEFAULT_PRESET}" if encoder is None else str(args.model)
    if encoder is not None:
        before, after = _flat(encoder.to_dict()), _flat(m.to_dict())
        changed = [k for k in after if after[k] != before.get(k) and k not in ADJUSTABLE]
        if changed:
            raise ConfigError(f"--set model.{changed[0]}: with --model the architecture is {args.model}'s; "
                              f"only {', '.join('model.' + k for k in ADJUSTABLE)} may change")
        if not any(a.split("=", 1)[0].strip() in ("warmup", "train.warmup") for a in args.set):
            cfgs["train"] = t.replace(warmup=int(CONTINUED_WARMUP * t.steps))
    if m.vocab_size != tok.vocab_size:
        raise ConfigError(f"the tokenizer has {tok.vocab_size} tokens but the model's vocab_size is {m.vocab_size} ({source}); "
                          "they must be equal")
    if m.pad_id != tok.pad_id:
        raise ConfigError(f"the tokenizer's [PAD] is id {tok.pad_id} but the model's pad_id is {m.pad_id} ({source}); they must be equal")
    if d.max_seq_len > m.max_len:
        raise ConfigError(f"data.max_seq_len={d.max_seq_len} is longer than the model's {m.max_len} positions")
    if args.pair_task != "none" and not m.pooler:
        raise ConfigError(f"--{args.pair_task} classifies the pooled [CLS] vector, but {source} has no pooler")
    return cfgs


def load_or_train_tokenizer(args: argparse.Namespace, max_len: int = 512) -> Any:
    from attnkit.data.wordpiece import WordPieceTokenizer

    if args.resume:
        if not (args.out / "run_config.json").is_file():
            raise CheckpointError(f"--resume: {args.out / 'run_config.json'} does not exist; nothing to resume in {args.out}")
        init = json.loads((args.out / "run_config.json").read_text()).get("init")
        if init is not None and args.model is None:
            raise ConfigError(f"the run in {args.out} continued pretraining {init}; resume it with --model {init}")
        return WordPieceTokenizer.from_file(args.out / "tokenizer.json", max_len=max_len)
    if args.tokenizer is not None or args.model is not None:
        return WordPieceTokenizer.from_file(args.tokenizer or args.model, max_len=max_len)
    return WordPieceTokenizer.train(args.text, args.vocab_size or DEFAULT_VOCAB_SIZE, lowercase=not args.cased)


def load_encoder_source(path: Path) -> tuple[Any, Any]:
    """``(model, encoder)`` of a checkpoint directory: ``attnkit.load(path)`` and the BERT encoder inside it."""
    import attnkit
    from attnkit.training.finetune import encoder_of

    source = attnkit.load(path)
    try:
        return source, encoder_of(source)
    except CheckpointError:
        raise CheckpointError(f"{path} holds a {type(source).__name__}, not a BERT-family encoder; "
                              "continued masked-LM pretraining needs one") from None


def init_from(model: Any, source: Any, path: Path) -> list[str]:
    """Copy ``source``'s weights into the :class:`~attnkit.models.bert_pretraining.BertPretraining` ``model``:
    its encoder always (strictly), its masked-LM head and NSP/SOP classifier where it has them.

    Returns:
        The parts of ``model`` left as initialised (``"masked-LM head"``, ``"nsp classifier"``).
    """
    from attnkit.models.base import load_state_strict
    from attnkit.models.bert_heads import BertMLM
    from attnkit.models.bert_pretraining import BertPretraining
    from attnkit.training.finetune import encoder_of

    load_state_strict(model.bert, encoder_of(source).state_dict(), f"{path} (its encoder)")
    mlm = source.mlm if isinstance(source, BertPretraining) else source if isinstance(source, BertMLM) else None
    pair = source.pair if isinstance(source, BertPretraining) and source.config.pair_task == model.config.pair_task else None
    fresh = []
    if mlm is not None:
        load_state_strict(model.mlm, mlm.state_dict(), f"{path} (its masked-LM head)")
    else:
        fresh.append("masked-LM head")
    if model.pair is not None:
        if pair is not None:
            load_state_strict(model.pair, pair.state_dict(), f"{path} (its {model.config.pair_task} classifier)")
        else:
            fresh.append(f"{model.config.pair_task} classifier")
    return fresh


def carry_pooling(source: Path, target: Path) -> str | None:
    """Copy a sentence-transformers checkpoint's pooling (``modules.json`` reduced to its Pooling
    modules, and their ``config.json``) into ``target``, so fine-tuning pools as the source was
    trained; returns the pooling (``"mean"``, ``"cls"``) or None when ``source`` has none."""
    from attnkit.training.finetune import checkpoint_pooling

    pooling = checkpoint_pooling(source)
    if pooling is None or not target.is_dir():
        return None
    modules = [m for m in json.loads((source / "modules.json").read_text(encoding="utf-8"))
               if str(m.get("type", "")).endswith("models.Pooling") and m.get("path")]  # never over the model's config.json
    for m in modules:
        (target / m["path"]).mkdir(parents=True, exist_ok=True)
        (target / m["path"] / "config.json").write_bytes((source / m["path"] / "config.json").read_bytes())
    (target / "modules.json").write_text(json.dumps(modules, indent=2) + "\n")
    return pooling


def run(args: argparse.Namespace) -> int:
    import torch

    from attnkit.data.pretraining import cut_long_sentences, read_documents, split_documents, tokenize_documents
    from attnkit.models.bert_pretraining import BertPretraining, BertPretrainingConfig
    from attnkit.training import Trainer, pick_device
    from attnkit.training.mlm import PretrainingTask

    check_flags(args)
    # Read first: an empty or missing file is reported before a tokenizer is learned from it.
    docs_text = read_documents(args.text, documents=args.documents or "paragraphs", sentences=args.sentences or "lines")
    source, encoder = load_encoder_source(args.model) if args.model is not None else (None, None)
    tok = load_or_train_tokenizer(args, encoder.config.max_len if encoder is not None else 512)
    if tok.mask_id is None:
        raise DataError("the tokenizer has no [MASK] token; masked-LM pretraining needs one")
    cfgs = build_configs(args, tok, encoder.config if encoder is not None else None)
    d, train_cfg = cfgs["data"], cfgs["train"]
    if (d.documents, d.sentences) != (args.documents or "paragraphs", args.sentences or "lines"):  # changed through --set
        docs_text = read_documents(args.text, documents=d.documents, sentences=d.sentences)
    if args.pair_task == "nsp" and len(docs_text) < 2:
        raise DataError("next-sentence prediction needs at least two documents; separate them by blank lines (or --documents files)")
    docs = [cut_long_sentences(doc, (d.max_seq_len - 3) // 2) for doc in tokenize_documents(docs_text, tok)]
    if not docs:
        raise DataError("the text gives no tokens")
    docs, train_ids, valid_ids = split_documents(docs, d.valid_fraction)
    device = pick_device(train_cfg.device)
    log = progress_writer(args.no_progress)
    task = PretrainingTask(docs, train_ids, valid_ids, tokenizer=tok, max_seq_len=d.max_seq_len, batch_size=train_cfg.batch_size,
                           pair_task=args.pair_task, masking=cfgs["masking"], short_seq_prob=d.short_seq_prob,
                           max_eval_pairs=d.max_eval_pairs, device=device, log=log)
    first = task.epoch_pairs(0, train_cfg.seed)
    if not first:
        raise DataError("the training documents give no sentence pairs; every document has a single sentence (separate documents by blank lines)")
    if not task.valid_pairs:
        raise DataError("the held-out documents give no sentence pairs; raise --set data.valid_fraction or add text")
    torch.manual_seed(train_cfg.seed)  # the initial weights, too, follow train.seed
    model = BertPretraining(BertPretrainingConfig(encoder=cfgs["model"], pair_task=args.pair_task))
    fresh = init_from(model, source, args.model) if source is not None else []
    del source, encoder
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    tok.save(out / "tokenizer.json")
    run_config = {k: v.to_dict() for k, v in cfgs.items()} | {"pair_task": args.pair_task}
    if args.model is not None:
        run_config["init"] = str(args.model)
    (out / "run_config.json").write_text(json.dumps(run_config, indent=2) + "\n")
    n_tokens = sum(len(s.ids) for doc in docs for s in doc)
    print(f"{len(docs):,} documents ({len(valid_ids):,} held out), {n_tokens:,} tokens; vocabulary {tok.vocab_size:,}; "
          f"{len(first):,} training sequences per epoch, {len(task.valid_pairs):,} held out; pair task: {args.pair_task}")
    print(f"model: {model.num_parameters() / 1e6:.2f}M parameters")
    if args.model is not None and not args.resume:
        parts = ["the masked-LM head starts fresh (its decoder is tied to the word embeddings)" if "masked-LM head" in fresh
                 else "masked-LM head loaded", *(f"the {p} starts fresh" for p in fresh if p != "masked-LM head")]
        print(f"initialised from {args.model}: encoder loaded; " + "; ".join(parts))
    trainer = Trainer(model, task, train_cfg, out, tokenizer=tok, progress=not args.no_progress)
    if args.model is not None and not args.resume:  # where continued pretraining starts from
        log("step 0 (the loaded weights):")
        model.eval()
        with torch.no_grad(), trainer.autocast():
            start = task.evaluate(model)
        (out / "start_eval.json").write_text(json.dumps({"step": 0, **start}, indent=2) + "\n")
    result = trainer.fit(resume=args.resume)
    report_training(result, out, "held-out loss")
    if args.model is not None and (pooling := carry_pooling(args.model, out / "model")) is not None:
        print(f"{out / 'model'} keeps {args.model}'s {pooling} pooling for attnkit finetune classify (modules.json)")
    return 0


def add_parser(tasks: Any) -> None:
    """Register ``mlm`` among the tasks of ``attnkit train``."""
    p = tasks.add_parser("mlm", help="pretrain a BERT (masked LM, + NSP or SOP) on text", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(run=run)

"""``attnkit train mlm --text FILE``: pretrain a BERT on your own text (masked LM, optionally + NSP or SOP).

Documents are the blank-line-separated paragraphs of the text (``--documents files``: one
document per file) and sentences its non-empty lines (``--sentences punct``: lines also cut
after ``.``, ``!``, ``?``). Sentences are packed in document order into
``[CLS] A [SEP] B [SEP]`` sequences of at most ``--max-seq-len`` tokens
(:mod:`attnkit.data.pretraining`). ``--nsp`` adds BERT's next-sentence prediction (50% IsNext,
50% NotNext from another document), ``--sop`` ALBERT's sentence-order prediction (50% swapped);
without either the model learns masked LM alone on full-sentence sequences (RoBERTa).
Masking is BERT's (15% of tokens; 80% [MASK], 10% random, 10% kept), drawn anew for every
batch; ``--whole-word`` masks whole words.

Without ``--tokenizer`` (a ``tokenizer.json`` or BERT ``vocab.txt``) a WordPiece vocabulary
of ``--vocab-size`` tokens is learned from the text. The model starts from ``--preset``
(default ``bert-tiny``) with its vocabulary set to the tokenizer's. The recipe follows BERT
(appendix A.2: AdamW, betas (0.9, 0.999), weight decay 0.01, warm-up then linear decay, no
label smoothing) with a learning rate and length for small models (lr 5e-4, 2000 steps of 32
sequences). The last ``data.valid_fraction`` of the documents are held out: every
``train.eval_every`` steps the masked-LM loss and accuracy and the NSP/SOP accuracy on them
are printed, and the best model (lowest summed loss) is saved in ``OUT/model`` with its
tokenizer; ``attnkit.load`` reads it back as a ``BertPretraining`` whose encoder is ``.bert``.
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


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--text", type=Path, nargs="+", required=True, help="UTF-8 text file(s) to pretrain on")
    p.add_argument("--tokenizer", type=Path, help="tokenizer.json or vocab.txt (default: learn WordPiece from the text)")
    p.add_argument("--vocab-size", type=int, default=8000, help="size of the learned WordPiece vocabulary (default: 8000)")
    p.add_argument("--cased", action="store_true", help="learned vocabulary keeps case and accents (default: lower-cased)")
    p.add_argument("--preset", default="bert-tiny", help="BERT preset (default: bert-tiny)")
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


def build_configs(args: argparse.Namespace, tok: Any) -> dict[str, Any]:
    """``model`` (BertConfig), ``train``, ``data`` and ``masking`` configs, ``--set`` applied and checked against the tokenizer."""
    from attnkit.data.pretraining import PretrainingDataConfig
    from attnkit.models.bert import bert_preset
    from attnkit.objectives.mlm import MaskingConfig
    from attnkit.training.config import TrainConfig

    try:
        model_cfg = bert_preset(args.preset, vocab_size=tok.vocab_size, pad_id=tok.pad_id)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    data = {k: v for k, v in (("max_seq_len", args.max_seq_len), ("documents", args.documents), ("sentences", args.sentences)) if v is not None}
    cfgs = apply_overrides(args.set, {
        "model": model_cfg, "train": TrainConfig(**DEFAULT_TRAIN), "data": PretrainingDataConfig(**data),
        "masking": MaskingConfig(whole_word=args.whole_word),
    })
    m, d = cfgs["model"], cfgs["data"]
    if m.vocab_size != tok.vocab_size:
        raise ConfigError(f"the tokenizer has {tok.vocab_size} tokens but the model's vocab_size is {m.vocab_size}; they must be equal")
    if d.max_seq_len > m.max_len:
        raise ConfigError(f"data.max_seq_len={d.max_seq_len} is longer than the model's {m.max_len} positions")
    if args.pair_task != "none" and not m.pooler:
        raise ConfigError(f"--{args.pair_task} classifies the pooled [CLS] vector, but preset {args.preset} has no pooler")
    return cfgs


def load_or_train_tokenizer(args: argparse.Namespace) -> Any:
    from attnkit.data.wordpiece import WordPieceTokenizer

    if args.resume:
        if not (args.out / "run_config.json").is_file():
            raise CheckpointError(f"--resume: {args.out / 'run_config.json'} does not exist; nothing to resume in {args.out}")
        return WordPieceTokenizer.from_file(args.out / "tokenizer.json")
    if args.tokenizer is not None:
        return WordPieceTokenizer.from_file(args.tokenizer)
    return WordPieceTokenizer.train(args.text, args.vocab_size, lowercase=not args.cased)


def run(args: argparse.Namespace) -> int:
    import torch

    from attnkit.data.pretraining import cut_long_sentences, read_documents, split_documents, tokenize_documents
    from attnkit.models.bert_pretraining import BertPretraining, BertPretrainingConfig
    from attnkit.training import Trainer, pick_device
    from attnkit.training.mlm import PretrainingTask

    # Read first: an empty or missing file is reported before a tokenizer is learned from it.
    docs_text = read_documents(args.text, documents=args.documents or "paragraphs", sentences=args.sentences or "lines")
    tok = load_or_train_tokenizer(args)
    if tok.mask_id is None:
        raise DataError("the tokenizer has no [MASK] token; masked-LM pretraining needs one")
    cfgs = build_configs(args, tok)
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
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    tok.save(out / "tokenizer.json")
    run_config = {k: v.to_dict() for k, v in cfgs.items()} | {"pair_task": args.pair_task}
    (out / "run_config.json").write_text(json.dumps(run_config, indent=2) + "\n")
    n_tokens = sum(len(s.ids) for doc in docs for s in doc)
    print(f"{len(docs):,} documents ({len(valid_ids):,} held out), {n_tokens:,} tokens; vocabulary {tok.vocab_size:,}; "
          f"{len(first):,} training sequences per epoch, {len(task.valid_pairs):,} held out; pair task: {args.pair_task}")
    print(f"model: {model.num_parameters() / 1e6:.2f}M parameters")
    result = Trainer(model, task, train_cfg, out, tokenizer=tok, progress=not args.no_progress).fit(resume=args.resume)
    report_training(result, out, "held-out loss")
    return 0



def add_parser(tasks: Any) -> None:
    """Register ``mlm`` among the tasks of ``attnkit train``."""
    p = tasks.add_parser("mlm", help="pretrain a BERT (masked LM, + NSP or SOP) on text", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(run=run)

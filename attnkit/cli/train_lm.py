"""``attnkit train lm --text FILE``: train a GPT language model on your own text.

The text is tokenized character by character (``--tokenizer char``, the default) or with
a byte-level BPE learned from it (``--tokenizer bpe --vocab-size N``); the first 90% of the
tokens train and the last 10% validate (as nanoGPT splits tiny Shakespeare). The model
starts from ``--preset`` (default ``char-shakespeare``) with its vocabulary set to the
tokenizer's; the training recipe defaults to nanoGPT's for that baseline (AdamW, lr 1e-3,
betas (0.9, 0.99), weight decay 0.1, 100 warm-up steps then cosine decay to lr/10, batch 64,
gradient clipping 1.0, 5000 steps), run eagerly (add
``--set train.compile=true`` for large models, where compilation pays for itself). Every ``train.eval_every`` steps the validation loss
is reported and a sample of text is printed; the best model is saved in ``OUT/model``.
``--set train.ema_decay=0.98`` evaluates and saves an exponential moving average of the
weights instead; the fastest measured tiny Shakespeare recipe (``benchmarks/gpt.py
shakespeare``, BENCHMARKS.md) also uses ``train.lr=2e-3 train.steps=2200``.
"""

from __future__ import annotations

import torch

import argparse
import json
from pathlib import Path
from typing import Any

from attnkit.cli.common import add_set_argument, apply_overrides, progress_writer, report_training
from attnkit.errors import CheckpointError

DEFAULT_TRAIN = dict(
    steps=5000, batch_size=64, optimizer="adamw", lr=1e-3, betas=(0.9, 0.99), eps=1e-8, weight_decay=0.1,
    schedule="cosine", warmup=100, min_lr_ratio=0.1, clip_norm=1.0, eval_every=250, log_every=50, label_smoothing=0.0,
    compile=False,  # at char-shakespeare size eager reaches a given loss sooner than compile + run; large models: --set train.compile=true
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--text", type=Path, required=True, help="a UTF-8 text file to learn")
    p.add_argument("--tokenizer", choices=["char", "bpe"], default="char", help="character level or byte-level BPE (default: char)")
    p.add_argument("--vocab-size", type=int, default=4096, help="BPE vocabulary size, specials included (default: 4096)")
    p.add_argument("--preset", default="char-shakespeare", help="GPT preset (default: char-shakespeare)")
    p.add_argument("--out", type=Path, default=Path("runs/lm"), help="output directory (default: runs/lm)")
    p.add_argument("--sample-tokens", type=int, default=200, help="length of the sample printed at each evaluation (0: none)")
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    add_set_argument(p)


def build_configs(args: argparse.Namespace, vocab_size: int) -> dict[str, Any]:
    from attnkit.models.gpt import gpt_preset
    from attnkit.training.config import TrainConfig

    try:
        model_cfg = gpt_preset(args.preset, vocab_size=vocab_size)
    except ValueError as e:
        from attnkit.errors import ConfigError

        raise ConfigError(str(e)) from None
    train_cfg = TrainConfig(**DEFAULT_TRAIN)
    return apply_overrides(args.set, {"model": model_cfg, "train": train_cfg})


def make_sampler(tok: Any, n_tokens: int, context: int) -> Any:
    """``model -> text``: a fixed-seed sample continuing a newline (or the first ordinary token)."""
    from attnkit.generation.sampling import SamplingConfig, generate

    start = tok.token_to_id("\n")
    if start is None:
        start = tok.encode("\n").ids[0] if tok.encode("\n").ids else 4
    cfg = SamplingConfig(max_new_tokens=max(1, min(n_tokens, context - 1)), temperature=0.8, top_k=200, seed=0)

    def sample(model: Any) -> str:
        out = generate(model, [[start]], cfg, decode=tok.decode)
        return "--- sample ---\n" + (out.texts[0] if out.texts else "") + "\n--------------"

    return sample


def run(args: argparse.Namespace) -> int:
    from attnkit.data.lm import LMTask
    from attnkit.data.text import encode, read_text, split_tokens, text_tokenizer
    from attnkit.data.tokenizer import load_tokenizer
    from attnkit.models.gpt import GPT
    from attnkit.training import Trainer, pick_device

    out: Path = args.out
    text = read_text(args.text)
    if args.resume:
        if not (out / "run_config.json").is_file():
            raise CheckpointError(f"--resume: {out / 'run_config.json'} does not exist; nothing to resume in {out}")
        tok = load_tokenizer(out / "tokenizer.json")
    else:
        tok = text_tokenizer(text, args.tokenizer, args.vocab_size)
    cfgs = build_configs(args, tok.get_vocab_size())
    model_cfg, train_cfg = cfgs["model"], cfgs["train"]
    train, valid = split_tokens(encode(tok, text), model_cfg.context)
    device = pick_device(train_cfg.device)
    out.mkdir(parents=True, exist_ok=True)
    tok.save(str(out / "tokenizer.json"))
    (out / "run_config.json").write_text(json.dumps({k: v.to_dict() for k, v in cfgs.items()}, indent=2) + "\n")
    print(f"{len(train):,} training and {len(valid):,} validation tokens; vocabulary {tok.get_vocab_size()} ({args.tokenizer})")
    log = progress_writer(args.no_progress)
    sample = make_sampler(tok, args.sample_tokens, model_cfg.context) if args.sample_tokens > 0 else None
    task = LMTask(train, valid, context=model_cfg.context, batch_size=train_cfg.batch_size, device=device, sample=sample, log=log)
    torch.manual_seed(train_cfg.seed)  # the initial weights are part of a reproducible run
    model = GPT(model_cfg)
    print(f"model: {model.num_parameters() / 1e6:.2f}M parameters")

    result = Trainer(model, task, train_cfg, out, tokenizer=tok, progress=not args.no_progress).fit(resume=args.resume)
    report_training(result, out, "validation loss")
    return 0



def add_parser(tasks: Any) -> None:
    """Register ``lm`` among the tasks of ``attnkit train``."""
    p = tasks.add_parser("lm", help="train a GPT language model on a text file", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(p)
    p.set_defaults(run=run)

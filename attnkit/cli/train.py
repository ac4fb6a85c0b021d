"""attnkit train TASK: train a model from a recipe, flags and --set overrides.

Tasks: reverse, sort, copy (synthetic string transduction, encoder-decoder), translate (a
parallel corpus), lm (a GPT on a text file), mlm (BERT pretraining), listops (Long Range Arena
ListOps with any attention kernel), and the pretraining objectives t5, bart, mass (denoising,
encoder-decoder), electra, unilm and xlnet (see docs/pretraining.md). Every task runs the same way:

  attnkit train TASK [--recipe NAME [--quick]] [flags] [--set KEY=VALUE ...] --out DIR
  attnkit train TASK --resume --out DIR

A recipe fixes the model, training and data settings of a published figure (attnkit recipes
lists them); flags and --set change any of them, all at once (their order does not matter).
--show-config prints every setting with its allowed values. The run writes run_config.json,
metrics.jsonl, metrics.csv, loss.png, checkpoints/ and model/ (with its tokenizer) under --out,
and eval.json with the final scores. --resume continues from the newest checkpoint with the
settings saved in --out; only how long it trains and how often it reports may change then.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from attnkit.cli.runner import add_run_arguments, run_command

DESCRIPTIONS = {
    "reverse": "Synthetic task: reverse digit strings with an encoder-decoder Transformer; recipe demo.",
    "sort": "Synthetic task: sort the digits of a string with an encoder-decoder Transformer.",
    "copy": "Synthetic task: copy digit strings with an encoder-decoder Transformer.",
}
SEQ2SEQ_EPILOG = """Evaluation: validation loss and greedy exact match on held-out strings; data.n_test more strings
are scored once with the saved model at the end. Defaults: the transformer-tiny preset, the Noam
schedule (train.optim.lr is its multiplier), label smoothing 0.1, 2,000 steps."""
TRANSLATE_DESCRIPTION = """Translation on a parallel corpus with the recipe of Vaswani et al. 2017.

  attnkit train translate --recipe multi30k-de-en --data-root DATA --out runs/multi30k
  attnkit train translate --src de --tgt en --data DIR --set train.steps=2000 --out runs/de-en

The corpus directory holds SPLIT.LANG files (train.de.gz, train.en.gz, val.de, ...). A joint
BPE (or unigram) vocabulary is learned on the training split, batches hold about
data.max_tokens tokens of sentences of similar length, the validation loss (and BLEU on
data.bleu_sentences sentences) is measured every train.eval.every steps, the last
data.average_last checkpoints are averaged into OUT/model, and data.test_split, if set, is
translated with beam search (data.beam_size, data.length_penalty) and scored with sacreBLEU,
overall and by thirds of source length. train.exposure.kind=scheduled, self_feed or adversarial
trains with a remedy for exposure bias (scheduled sampling, own predictions as inputs, perturbed
decoder embeddings; recipes multi30k-de-en-scheduled, -self-feed, -adversarial)."""
LM_DESCRIPTION = """Train a GPT language model on a text file.

  attnkit train lm --recipe shakespeare-char --data-root DATA --out runs/shakespeare
  attnkit train lm --text FILE [--tokenizer bpe --vocab-size 4096] --out runs/lm

The text is tokenized by character or with a byte-level BPE learned from it; the first 90%
of the tokens train and the last 10% validate. Every train.eval.every steps the validation
loss is reported and, with data.sample_tokens > 0, a sample of text printed; the best model
goes to OUT/model. Defaults: the char-shakespeare preset and nanoGPT's recipe for it (AdamW,
lr 1e-3, cosine decay to lr/10 after 100 warm-up steps, 5,000 steps of 64)."""


def add_parser(sub: Any) -> None:
    from attnkit.cli import train_denoise, train_electra, train_listops, train_mlm, train_unilm, train_xlnet

    p = sub.add_parser("train", help="train a model (TASK: reverse, sort, copy, translate, lm, mlm, listops, t5, bart, mass, electra, unilm, xlnet, dialogue)", description=__doc__,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    tasks = p.add_subparsers(dest="task", metavar="TASK")
    tasks.required = True
    for name, text in DESCRIPTIONS.items():
        t = tasks.add_parser(name, help=text.split(":")[1].strip().rstrip(".") if ":" in text else text, description=text,
                             epilog=SEQ2SEQ_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
        t.add_argument("--preset", help="model preset to start from (e.g. transformer-tiny, transformer-small)")
        add_run_arguments(t, name, out=f"runs/{name}")
        t.set_defaults(run=run_seq2seq, task=name)
    t = tasks.add_parser("translate", help="translation on a parallel corpus (the paper's recipe)", description=TRANSLATE_DESCRIPTION,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    g = t.add_argument_group("translate")
    g.add_argument("--data", type=Path, help="corpus directory with SPLIT.LANG(.gz) files (sets data.data)")
    g.add_argument("--src", help="source language, the files' suffix, e.g. de (sets data.src)")
    g.add_argument("--tgt", help="target language, e.g. en (sets data.tgt)")
    g.add_argument("--vocab-size", type=int, help="joint subword vocabulary size (sets data.vocab_size; default 8000)")
    g.add_argument("--preset", help="model preset to start from (default: transformer-base)")
    add_run_arguments(t, "translate", out="runs/translate")
    t.set_defaults(run=run_seq2seq, task="translate")
    t = tasks.add_parser("lm", help="a GPT language model on a text file", description=LM_DESCRIPTION,
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    g = t.add_argument_group("lm")
    g.add_argument("--text", type=Path, help="a UTF-8 text file to learn (sets data.text)")
    g.add_argument("--tokenizer", choices=["char", "bpe"], help="character level (default) or byte-level BPE (sets data.tokenizer)")
    g.add_argument("--vocab-size", type=int, help="BPE vocabulary size, specials included (sets data.vocab_size; default 4096)")
    g.add_argument("--sample-tokens", type=int, help="tokens of text sampled at each evaluation, 0 for none (sets data.sample_tokens)")
    g.add_argument("--preset", help="GPT preset to start from (default: char-shakespeare; also gpt2, gpt2-medium, llama-char, llama-124m)")
    g.add_argument("--model", type=Path, metavar="DIR", help="a trained GPT (attnkit or Hugging Face GPT-2) to go on training on --text, "
                   "with its tokenizer (sets data.model)")
    g.add_argument("--peft", choices=("lora", "qlora", "prefix", "prompt", "ptuning", "ptuning-v2"), metavar="METHOD",
                   help="with --model: train an adapter only (sets peft.method; OUT/model is the adapter)")
    add_run_arguments(t, "lm", out="runs/lm")
    t.set_defaults(run=run_lm, task="lm")
    train_mlm.add_parser(tasks)
    train_listops.add_parser(tasks)
    train_denoise.add_parser(tasks)
    train_electra.add_parser(tasks)
    train_unilm.add_parser(tasks)
    train_xlnet.add_parser(tasks)
    from attnkit.cli import train_dialogue

    train_dialogue.add_parser(tasks)


def flag_assignments(args: argparse.Namespace, mapping: dict[str, str]) -> list[str]:
    """``--flag value`` -> ``data.key=value`` for the flags that were given (``mapping``: attribute -> dotted key)."""
    import json

    out = []
    for attr, key in mapping.items():
        value = getattr(args, attr, None)
        if value is not None:
            out.append(f"{key}={json.dumps(str(value) if isinstance(value, Path) else value)}")
    return out


def model_preset(task: str, name: str | None) -> dict[str, Any] | None:
    """``{"model": preset}`` for ``--preset NAME`` (None without it)."""
    if name is None:
        return None
    from attnkit.errors import ConfigError

    try:
        if task == "lm":
            from attnkit.models.gpt import gpt_preset

            return {"model": gpt_preset(name)}
        from attnkit.data.synthetic import DIGITS
        from attnkit.data.tokenizer import char_tokenizer
        from attnkit.models.transformer import preset

        if task in DESCRIPTIONS:
            vocab = char_tokenizer(DIGITS).get_vocab_size()
            return {"model": preset(name, src_vocab_size=vocab, tgt_vocab_size=vocab)}
        return {"model": preset(name)}
    except ValueError as e:
        raise ConfigError(str(e)) from None


def run_seq2seq(args: argparse.Namespace) -> int:
    from attnkit.runs import job

    flags = flag_assignments(args, {"data": "data.data", "src": "data.src", "tgt": "data.tgt", "vocab_size": "data.vocab_size"})
    run_command(args, job(args.task), flags, base=model_preset(args.task, args.preset))
    return 0


def run_lm(args: argparse.Namespace) -> int:
    from attnkit.runs import job

    flags = flag_assignments(args, {"text": "data.text", "tokenizer": "data.tokenizer", "vocab_size": "data.vocab_size",
                                    "sample_tokens": "data.sample_tokens", "model": "data.model", "peft": "peft.method"})
    run_command(args, job("lm"), flags, base=model_preset("lm", args.preset))
    return 0

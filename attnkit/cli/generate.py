"""``attnkit generate --model DIR --prompt TEXT``: continue text with a GPT model, or write a UniLM model's target.

One prompt streams its continuation to the terminal token by token; several ``--prompt``
are decoded together in left-padded batches of ``--batch-size`` and printed as each batch is done. ``--temperature 0``
(or ``--greedy``) picks the most likely token; otherwise tokens are sampled, optionally
restricted to the ``--top-k`` most likely and to the ``--top-p`` nucleus.

Rows stop at the tokenizer's end-of-text token (``<|endoftext|>`` or ``</s>``) or a ``--stop`` string.

Limits: a prompt longer than the model's context is an error; generation stops early when
prompt + new tokens fill the context (no sliding window).

A model trained by ``attnkit train unilm`` reads each prompt as the source of a sequence-to-sequence
task and prints its target on a line of its own: UniLM's decoding (Dong et al. 2019), a [MASK] after
the target so far predicted under the seq2seq self-attention mask, greedily, until [SEP]. Sampling
options (``--top-k``, ``--top-p``, ``--seed``) do not apply to it.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from attnkit.cli.helptext import plain
from attnkit.errors import CheckpointError, ConfigError, DataError

MAX_SEED = 2**63 - 1  # torch.manual_seed takes a 64-bit integer


def add_parser(sub: Any) -> None:
    p = sub.add_parser("generate", help="generate text with a GPT model (or a UniLM model's target)", description=plain(__doc__),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", type=Path, required=True, help="model directory (attnkit GPT or UniLM, or Hugging Face GPT-2) with "
                   "tokenizer.json")
    p.add_argument("--prompt", action="append", required=True, help="text to continue (repeat for a batch)")
    p.add_argument("--max-new-tokens", type=int, default=200, help="tokens to generate per prompt (default: 200)")
    p.add_argument("--temperature", type=float, default=0.8, help="softmax temperature; 0 = greedy (default: 0.8)")
    p.add_argument("--greedy", action="store_true", help="same as --temperature 0")
    p.add_argument("--top-k", type=int, default=None, help="sample among the k most likely tokens")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling: the smallest set with probability >= p, p in (0, 1]")
    p.add_argument("--seed", type=int, default=None, help="random seed (same seed, same output)")
    p.add_argument("--stop", action="append", default=[], help="stop a row when its text contains this string (repeatable)")
    p.add_argument("--batch-size", type=int, default=32, help="prompts decoded together (default: 32)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps (default: auto)")
    p.add_argument("--compile", action="store_true", help="compile the decode step (CUDA graphs; on CUDA with at most 4 "
                   "prompts, one-row linears too); pays off for long outputs")
    p.set_defaults(run=run)


def check_args(args: argparse.Namespace) -> None:
    """Reject bad sampling values with one-line ConfigErrors naming the option."""
    if args.top_p is not None and not 0.0 < args.top_p <= 1.0:
        raise ConfigError(f"--top-p {args.top_p} is outside (0, 1]; use e.g. --top-p 0.9 (1 disables it)")
    if args.top_k is not None and args.top_k < 1:
        raise ConfigError(f"--top-k {args.top_k} must be >= 1")
    if args.temperature < 0:
        raise ConfigError(f"--temperature {args.temperature} must be >= 0 (0 = greedy)")
    if args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens {args.max_new_tokens} must be >= 1")
    if args.batch_size < 1:
        raise ConfigError(f"--batch-size {args.batch_size} must be >= 1")
    if args.seed is not None and not 0 <= args.seed <= MAX_SEED:
        raise ConfigError(f"--seed {args.seed} is outside 0 ... {MAX_SEED} (2^63 - 1); use a smaller seed")
    if any(s == "" for s in args.stop):
        raise ConfigError("--stop '' is empty and would stop every row at once; give the text to stop at")


def run(args: argparse.Namespace) -> int:
    import torch

    from attnkit.data.text import encode
    from attnkit.data.tokenizer import check_against_model, load_tokenizer
    from attnkit.generation.one_row import MAX_ROWS, use_one_row_linears
    from attnkit.generation.sampling import SamplingConfig, generate
    from attnkit.loading import load
    from attnkit.models.gpt import GPT
    from attnkit.training.loop import pick_device

    check_args(args)
    device = pick_device(args.device)
    model = load(args.model, map_location=device)  # refused before it is moved if the device's free memory cannot hold it
    from attnkit.models.unilm import UnilmMLM

    if isinstance(model, UnilmMLM):
        return run_unilm(args, model)
    if not isinstance(model, GPT):
        raise CheckpointError(f"{args.model} holds a {type(model).__name__}; generate needs a GPT language model or a UniLM model")
    tok = load_tokenizer(args.model)
    check_against_model(tok, model.config, str(args.model / "tokenizer.json"))
    context = model.config.context
    prompts = []
    for i, text in enumerate(args.prompt):
        if not text:
            raise DataError(f"--prompt number {i + 1} is empty; give some text to continue")
        ids = encode(tok, text, what=f"prompt {text[:20]!r}")
        if len(ids) > context:
            raise DataError(f"the prompt is {len(ids)} tokens, longer than the model's context of {context}; shorten it")
        prompts.append(ids)
    room = context - max(map(len, prompts))
    if room <= 0:
        raise DataError(f"the prompt fills the model's context of {context} tokens; no room to generate; shorten it")
    if room < args.max_new_tokens:
        print(f"attnkit: note: the context of {context} tokens leaves room for {room} new tokens", file=sys.stderr)
    cfg = SamplingConfig(
        max_new_tokens=min(args.max_new_tokens, room),
        temperature=0.0 if args.greedy else args.temperature,
        top_k=args.top_k,
        top_p=args.top_p,
        seed=args.seed,
        eos_id=next((i for i in map(tok.token_to_id, ("<|endoftext|>", "</s>")) if i is not None), None),
        stop=tuple(args.stop),
    )
    decode = lambda ids: tok.decode(ids, skip_special_tokens=False)  # noqa: E731
    streaming = len(prompts) == 1
    state: dict[str, Any] = {"ids": [], "shown": ""}
    hold = max((len(s) for s in args.stop), default=1) - 1  # keep back what may start a stop string

    def on_token(step: int, token: torch.Tensor) -> None:
        state["ids"].append(int(token[0]))
        text = decode(state["ids"])
        if text.endswith("\ufffd") or not text.startswith(state["shown"]):
            return  # an incomplete UTF-8 sequence of byte-level BPE: wait for the next byte
        if args.stop and any(s in text for s in args.stop):
            return
        text = text[: len(text) - hold]
        if len(text) <= len(state["shown"]):
            return
        sys.stdout.write(text[len(state["shown"]) :])
        sys.stdout.flush()
        state["shown"] = text

    if args.compile and min(len(prompts), args.batch_size) <= MAX_ROWS and next(model.parameters()).is_cuda:
        # one-row products as fused reductions, with the pre-norm LayerNorms folded into them
        use_one_row_linears(model, fold_norms=True)
    if streaming:
        sys.stdout.write(args.prompt[0])
    if streaming:
        out = generate(model, prompts, cfg, decode=decode, on_token=on_token, compile=args.compile)
        assert out.texts is not None
        final = out.texts[0]
        sys.stdout.write(final[len(state["shown"]) :] if final.startswith(state["shown"]) else "")
        sys.stdout.write("\n")
        return 0
    for start in range(0, len(prompts), args.batch_size):
        out = generate(model, prompts[start : start + args.batch_size], cfg, decode=decode, compile=args.compile)
        assert out.texts is not None
        for prompt, text in zip(args.prompt[start : start + args.batch_size], out.texts):
            print(prompt + text)
            print("-" * 40)
        sys.stdout.flush()
    return 0


def run_unilm(args: argparse.Namespace, model: Any) -> int:
    """Each prompt as a UniLM source, its greedy target printed on a line (:func:`attnkit.generation.unilm.unilm_generate`)."""
    from attnkit.data.wordpiece import WordPieceTokenizer
    from attnkit.generation.unilm import unilm_generate

    sampling = [name for name, given in (("--top-k", args.top_k is not None), ("--top-p", args.top_p is not None),
                                         ("--seed", args.seed is not None)) if given]
    if sampling:
        raise ConfigError(f"{args.model} is a UniLM model, which decodes greedily; drop {', '.join(sampling)}")
    if not (args.model / "tokenizer.json").is_file():
        raise CheckpointError(f"{args.model} has no tokenizer.json; a UniLM model directory holds the one it was trained with")
    tok = WordPieceTokenizer.from_file(args.model)
    model.eval()
    for i, text in enumerate(args.prompt):
        if not text:
            raise DataError(f"--prompt number {i + 1} is empty; give the source text")
        source = tok.tokenizer.encode(text, add_special_tokens=False).ids
        room = model.config.max_len - len(source) - 3  # [CLS] S [SEP], and the [MASK] of the next step
        if room < 1:
            raise DataError(f"the prompt is {len(source)} tokens; with [CLS], [SEP] and one [MASK] it fills the model's "
                            f"{model.config.max_len} positions; shorten it")
        target = unilm_generate(model, source, cls_id=tok.cls_id, sep_id=tok.sep_id, mask_id=tok.mask_id,
                                max_new_tokens=min(args.max_new_tokens, room + 1))
        print(tok.tokenizer.decode(target), flush=True)
    return 0

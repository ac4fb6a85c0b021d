"""``attnkit convert --to-hf SRC DST`` / ``--to-attnkit SRC DST``: change a checkpoint's format.

``--to-hf`` writes a Hugging Face directory (config.json + model.safetensors):

* a GPT model as GPT-2 (``transformers.GPT2LMHeadModel.from_pretrained(DST)`` loads it), a GPT with
  rotary positions (the Llama family) as Llama, Mistral (with a sliding window) or Qwen2 (q/k/v biases
  only) (``LlamaForCausalLM`` and its siblings load it);
* a BERT-family model (encoder or head) as ``--family bert|roberta|albert|electra`` (default: the family
  its options point to; the matching ``transformers`` class, e.g. ``BertForSequenceClassification``,
  loads it);
* an encoder-decoder ``Transformer`` as ``--family t5|bart|marian|pegasus`` (default: the one its config
  fits): T5's layer (relative position bias, RMS pre-norm, no biases; the ``t5-shakespeare-t5layer``
  recipe) as ``T5ForConditionalGeneration``, BART's layer (post-norm, GELU, learned positions per
  stack, embedding LayerNorm; the ``bart-shakespeare-bartlayer`` and ``mass-shakespeare-bartlayer``
  recipes) as ``BartForConditionalGeneration``, the layer of "Attention Is All You Need" (sinusoidal
  positions, post-norm, scaled embeddings; the ``multi30k-de-en`` and ``demo`` recipes) as
  ``MarianMTModel``, the same with pre-norm layers and a LayerNorm after each stack (the
  ``bart-shakespeare``, ``mass-shakespeare`` and ``t5-shakespeare`` recipes) as
  ``PegasusForConditionalGeneration``. A model that none of the four expresses is refused, naming why;
* an XLNet model as ``--family xlnet`` (the default): ``XLNetLM`` as ``XLNetLMHeadModel``, ``XLNetClassifier`` and
  ``XLNetTagger`` as ``XLNetForSequenceClassification`` and ``XLNetForTokenClassification``.

``--to-attnkit`` writes an attnkit directory. ``tokenizer.json`` is copied when SRC has one, and so is an
encoder-decoder's ``translation.json`` (the languages and decoding settings ``attnkit translate`` reads).
``attnkit.load`` reads both formats (Hugging Face GPT-2, Llama, Mistral, Qwen2, the BERT family,
T5, BART, Marian, Pegasus and XLNet), so SRC may be either.

DST is written beside its final place and renamed in when complete. A DST that exists and is
not empty is refused, unless it is a model directory of the kind being written (config.json,
model.safetensors, tokenizer.json and translation.json, nothing else) and --overwrite is given; a DST that is
SRC, contains it or lies inside it is always refused.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from attnkit.cli.helptext import plain
from attnkit.errors import CheckpointError, ConfigError

CONFIG_NAME, WEIGHTS_NAME, TOKENIZER_NAME = "config.json", "model.safetensors", "tokenizer.json"  # as attnkit.models.base names them
TRANSLATION_NAME = "translation.json"  # as attnkit.training.translation names it

# the --family choices of each kind of model (the default is the one its config fits: see family_of)
FAMILIES = {"bert": ("bert", "roberta", "albert", "electra"), "seq2seq": ("t5", "bart", "marian", "pegasus"), "xlnet": ("xlnet",)}
SEQ2SEQ_RECIPES = {"t5": "t5-shakespeare-t5layer", "bart": "bart-shakespeare-bartlayer or mass-shakespeare-bartlayer",
                   "marian": "multi30k-de-en", "pegasus": "bart-shakespeare, mass-shakespeare or t5-shakespeare"}
SEQ2SEQ_NAMES = {"t5": "T5", "bart": "BART", "marian": "Marian", "pegasus": "Pegasus"}
# the family of each norm position among those with sinusoidal positions
SINUSOIDAL = {"post": "marian", "pre": "pegasus"}


def add_parser(sub: Any) -> None:
    p = sub.add_parser("convert", help="convert a GPT, BERT-family, T5/BART/Marian/Pegasus-shaped encoder-decoder or XLNet checkpoint "
                                       "to or from the Hugging Face format", description=plain(__doc__),
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    fmt = p.add_mutually_exclusive_group(required=True)
    fmt.add_argument("--to-hf", action="store_true",
                     help="write a Hugging Face directory (GPT-2 or the Llama family; for other models their --family)")
    fmt.add_argument("--to-attnkit", action="store_true", help="write an attnkit checkpoint directory")
    p.add_argument("--family", choices=tuple(f for fs in FAMILIES.values() for f in fs), default=None,
                   help="Hugging Face family to write: bert/roberta/albert/electra for a BERT-family model, t5/bart/marian/pegasus "
                        "for an encoder-decoder Transformer (sinusoidal positions: marian post-norm, pegasus pre-norm), xlnet for XLNet "
                        "(default: the one the model's config fits)")
    p.add_argument("src", type=Path, help="checkpoint directory to read")
    p.add_argument("dst", type=Path, help="directory to write (new or empty; see --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace a DST that holds a model directory of the kind being written")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from attnkit.loading import load

    check_destination(args.src, args.dst, hf=args.to_hf, overwrite=args.overwrite)
    model = load(args.src)
    kind = kind_of(model)
    name = type(model).__name__
    if kind is None:
        raise CheckpointError(f"{args.src} holds a {name}; only GPT, BERT-family, encoder-decoder Transformer and XLNet "
                              "models convert to the Hugging Face format")
    if args.family is not None and not args.to_hf:
        raise CheckpointError(f"--to-attnkit writes no Hugging Face family; leave out --family {args.family}")
    if args.family is not None and args.family not in FAMILIES.get(kind, ()):
        fits = FAMILIES.get(kind)
        fix = f"choose --family {'|'.join(fits)} or leave it out" if fits else "leave out --family (its config picks GPT-2 or the Llama family)"
        raise CheckpointError(f"--family {args.family} does not fit {args.src}, which holds a {name}; {fix}")
    tokenizer = args.src / TOKENIZER_NAME if (args.src / TOKENIZER_NAME).is_file() else None
    extras = translation_info(args.src) if kind == "seq2seq" else {}
    family = (args.family or family_of(model, kind, args.src)) if args.to_hf else None
    try:
        if args.to_hf:
            fmt = f"Hugging Face {write(model, kind, family, args.dst, tokenizer, extras)}"
        else:
            model.save_pretrained(args.dst, tokenizer=tokenizer, extra_files=extras)
            fmt = "attnkit"
    except OSError as e:
        raise CheckpointError(f"cannot write {args.dst}: {e.strerror or e}; DST was left as it was") from None
    except ConfigError as e:  # a field the family's exporter does not express (e.g. a --family the config does not fit)
        target = f"Hugging Face {family}" if family else "the Hugging Face format"
        raise CheckpointError(f"{args.src} does not convert to {target}: {e}{_seq2seq_fix(model, family)}") from None
    print(f"wrote {args.dst} ({fmt} format, {model.num_parameters():,} parameters)")
    return 0


def kind_of(model: Any) -> str | None:
    """``"gpt"``, ``"bert"``, ``"seq2seq"`` or ``"xlnet"``: which exporters ``model`` goes to; None for other models."""
    from attnkit.hub import bert, xlnet
    from attnkit.models.gpt import GPT
    from attnkit.models.transformer import Transformer

    if isinstance(model, GPT):
        return "gpt"
    if type(model) in bert.HEADS.values():
        return "bert"
    if isinstance(model, Transformer):
        return "seq2seq"
    if type(model) in xlnet.HEADS.values():  # XLNetLM and its fine-tuning heads
        return "xlnet"
    return None


def family_of(model: Any, kind: str, src: Path) -> str | None:
    """The Hugging Face family that ``model``'s config points to (None for a GPT: :func:`write` picks GPT-2 or the Llama family).

    Raises:
        CheckpointError: an encoder-decoder that none of T5, BART, Marian and Pegasus expresses, naming why and the recipes that fit.
    """
    if kind == "bert":
        return _bert_family(model)
    if kind == "xlnet":
        return "xlnet"
    if kind == "gpt":
        return None
    misfits = seq2seq_misfits(model.config)
    fitting = [f for f in FAMILIES["seq2seq"] if misfits[f] is None]
    if fitting:
        return fitting[0]
    c = model.config
    if c.positional == "sinusoidal" and c.attention.position.kind == "none":
        family = SINUSOIDAL[c.norm_position]  # of the four, only Marian and Pegasus have them, one per norm position
        why = f"its sinusoidal positions exist only in Marian (post-norm) and Pegasus (pre-norm), and {misfits[family]}"
    else:
        why = "none of T5, BART, Marian and Pegasus expresses its config (" + "; ".join(
            f"{SEQ2SEQ_NAMES[f]}: {misfits[f]}" for f in FAMILIES["seq2seq"]) + ")"
    *rest, last = [f"the {SEQ2SEQ_RECIPES[f]} recipe ({SEQ2SEQ_NAMES[f]})" for f in FAMILIES["seq2seq"]]
    recipes = f"{', '.join(rest)} or {last}"
    raise CheckpointError(f"{src} holds a Transformer that converts to no Hugging Face class: {why}; train it with {recipes}")


def seq2seq_misfits(c: Any) -> dict[str, str | None]:
    """For each encoder-decoder family: the exporter's reason to refuse the :class:`TransformerConfig` ``c``, or None where it fits."""
    from attnkit.hub.bart import bart_config_to_hf
    from attnkit.hub.marian import marian_config_to_hf
    from attnkit.hub.pegasus import pegasus_config_to_hf
    from attnkit.hub.t5 import t5_config_to_hf

    out: dict[str, str | None] = {}
    for family, translate in (("t5", t5_config_to_hf), ("bart", bart_config_to_hf), ("marian", marian_config_to_hf),
                              ("pegasus", pegasus_config_to_hf)):
        try:
            translate(c)
            out[family] = None
        except ConfigError as e:
            out[family] = str(e)
    return out


def _seq2seq_fix(model: Any, family: str | None) -> str:
    """The fix after an exporter refused an encoder-decoder as ``family``: the other family if it fits, else the recipe."""
    if family not in SEQ2SEQ_RECIPES:
        return ""
    other = [f for f, why in seq2seq_misfits(model.config).items() if why is None and f != family]
    return f"; choose --family {other[0]} or leave it out" if other else f"; train it with the {SEQ2SEQ_RECIPES[family]} recipe"


def translation_info(src: Path) -> dict[str, str]:
    """``{"translation.json": its text}`` where ``src`` has one, else ``{}``.

    Raises:
        CheckpointError: the file exists but cannot be read as UTF-8 text.
    """
    path = src / TRANSLATION_NAME
    if not path.is_file():
        return {}
    try:
        return {TRANSLATION_NAME: path.read_text(encoding="utf-8")}
    except (OSError, UnicodeDecodeError) as e:
        raise CheckpointError(f"cannot read {path}: {getattr(e, 'strerror', None) or e}") from None


def write(model: Any, kind: str, family: str | None, dst: Path, tokenizer: Path | None, extras: dict[str, str]) -> str:
    """Write ``model`` to ``dst`` as the Hugging Face ``family`` (a GPT: None); returns the family's name as the message gives it.

    ``extras`` (name -> text: an encoder-decoder's ``translation.json``) are written beside the weights."""
    if kind == "bert":
        from attnkit.hub.bert import save_hf_bert

        save_hf_bert(model, dst, family=family, tokenizer=tokenizer)
        return family
    if kind == "seq2seq":
        from attnkit.hub.bart import save_hf_bart
        from attnkit.hub.marian import save_hf_marian
        from attnkit.hub.pegasus import save_hf_pegasus
        from attnkit.hub.t5 import save_hf_t5

        save = {"t5": save_hf_t5, "bart": save_hf_bart, "marian": save_hf_marian, "pegasus": save_hf_pegasus}[family]
        save(model, dst, tokenizer=tokenizer, extra_files=extras)
        return SEQ2SEQ_NAMES[family]
    if kind == "xlnet":
        from attnkit.hub.xlnet import save_hf_xlnet

        save_hf_xlnet(model, dst, tokenizer=tokenizer)
        return "XLNet"
    from attnkit.hub.gpt2 import save_hf_gpt2
    from attnkit.hub.llama import family_of as llama_family, save_hf_llama

    if model.config.learned_positions:
        save_hf_gpt2(model, dst, tokenizer=tokenizer)
        return "GPT-2"
    save_hf_llama(model, dst, tokenizer=tokenizer)  # rotary positions: the Llama family
    return llama_family(model.config)


MODEL_FILES = frozenset({CONFIG_NAME, WEIGHTS_NAME, TOKENIZER_NAME, TRANSLATION_NAME})


def check_destination(src: Path, dst: Path, *, hf: bool, overwrite: bool) -> None:
    """Refuse a DST whose replacement would delete anything but a model directory of the kind being written.

    Args:
        src: the directory read.
        dst: the directory to write.
        hf: a Hugging Face directory is written (else an attnkit one).
        overwrite: the user asked to replace an existing model directory of that kind.
    """
    s, d = src.resolve(), dst.resolve()
    if d == s:
        raise CheckpointError(f"source and destination are the same directory ({src}); choose another DST")
    if d in s.parents:
        raise CheckpointError(f"DST {dst} contains SRC {src}; writing it would delete the source; choose another DST")
    if s in d.parents:
        raise CheckpointError(f"DST {dst} lies inside SRC {src}; a model directory holds only its own files; choose a DST outside it")
    if not dst.exists() and not dst.is_symlink():
        return
    if not dst.is_dir() or dst.is_symlink():
        raise CheckpointError(f"DST {dst} exists and is not a directory; choose another DST")
    names = {p.name for p in dst.iterdir()}
    if not names:
        return
    kind = "Hugging Face" if hf else "attnkit"
    a_kind = "a Hugging Face" if hf else "an attnkit"
    if not names <= MODEL_FILES or not {CONFIG_NAME, WEIGHTS_NAME} <= names or _kind(dst) != kind:
        raise CheckpointError(f"DST {dst} is not empty and is not {a_kind} model directory; choose a new or empty DST")
    if not overwrite:
        raise CheckpointError(f"DST {dst} holds {a_kind} model; add --overwrite to replace it, or choose another DST")


def _kind(path: Path) -> str | None:
    """``"Hugging Face"`` or ``"attnkit"`` for a model directory's config.json, else None."""
    import json

    from attnkit.models.base import model_types

    try:
        data = json.loads((path / CONFIG_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict):
        return None
    if "architectures" in data:  # transformers writes it, attnkit never; "bert" and "xlnet" are model types of both
        return "Hugging Face"
    if data.get("model_type") in model_types():
        return "attnkit"
    return "Hugging Face" if data.get("model_type") in HF_TYPES else None


HF_TYPES = ("gpt2", "bert", "roberta", "albert", "electra", "llama", "mistral", "qwen2", "t5", "bart", "marian", "pegasus",
            "xlnet")


def _bert_family(model: Any) -> str:
    """The Hugging Face family a BERT-family model's options point to."""
    c = getattr(model.config, "encoder", model.config)
    if c.share_layers:
        return "albert"
    if c.positions == "after_pad":
        return "roberta"
    return "electra" if c.d_embed is not None or type(model).__name__ == "ElectraDiscriminator" else "bert"

"""attnkit eval translate: BLEU of a trained translation model on a held-out split.

    attnkit eval translate --model runs/de-en/model --data data/multi30k --split test_2016_flickr

Decodes the split's source side (batched beam search, beam 4 and length penalty 0.6 unless
the model or the flags say otherwise) and prints corpus sacreBLEU against its target side,
cased and lowercased, 13a tokenization, each with sacreBLEU's signature. The language pair is
the model's (its translation.json) unless --src/--tgt are given. BLEU is also reported for the
thirds of the split by source length in words (shortest first; --length-buckets N for another
number of groups), where exposure bias shows on the longest. Needs the optional sacrebleu
package: pip install "attnkit[eval]".
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from attnkit.cli.common import add_overwrite_argument, check_output_file
from attnkit.cli.helptext import plain
from attnkit.cli.translate import add_model_arguments, load_translator
from attnkit.errors import ConfigError, DataError
from attnkit.io import atomic_write_text


OVERVIEW = """attnkit eval TASK: score a trained model on held-out data.

    attnkit eval translate --model runs/de-en/model --data data/multi30k --split test_2016_flickr
    attnkit eval classify --model runs/sst2/model --data sst2/dev.tsv        # accuracy
    attnkit eval ner --model runs/ner/model --data emerging.test.annotated    # entity P / R / F1

Each task has its own page: attnkit eval TASK --help.
"""


def add_parser(sub: Any) -> None:
    from attnkit.cli import evaluate_labelled

    p = sub.add_parser("eval", help="score a trained model on held-out data (translate, classify, ner)", description=OVERVIEW,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    tasks = p.add_subparsers(dest="task", metavar="TASK")
    tasks.required = True
    t = tasks.add_parser("translate", help="BLEU of a translation model on a corpus split", description=plain(__doc__),
                         formatter_class=argparse.RawDescriptionHelpFormatter)
    add_model_arguments(t)
    t.add_argument("--data", type=Path, required=True, help="corpus directory with SPLIT.LANG or SPLIT.LANG.gz files")
    t.add_argument("--split", default="test_2016_flickr", help="split to score (default: test_2016_flickr)")
    t.add_argument("--src", help="source language (default: the model's)")
    t.add_argument("--tgt", help="target language (default: the model's)")
    t.add_argument("--hypotheses", type=Path, help="also write the translations to this file")
    add_overwrite_argument(t, "--hypotheses")
    t.add_argument("--json", action="store_true", help="print the scores as one JSON object")
    t.add_argument("--length-buckets", type=int, default=3, metavar="N",
                   help="also score N groups of the sentences by source length in words (default: 3, thirds; 0: none)")
    t.set_defaults(run=run)
    evaluate_labelled.add_parsers(tasks)


def run(args: argparse.Namespace) -> int:
    from attnkit.data.parallel import read_parallel
    from attnkit.metrics import bleu_by_length, bleu_scores, require_sacrebleu
    from attnkit.training.translation import translate_lines

    if args.hypotheses is not None:
        check_output_file(args.hypotheses, "--hypotheses", overwrite=args.overwrite)
    model, tok, info = load_translator(args)
    src, tgt = args.src or info.get("src"), args.tgt or info.get("tgt")
    if not src or not tgt:
        raise ConfigError(f"{args.model} does not record its languages (no translation.json); pass --src LANG --tgt LANG")
    if args.length_buckets < 0:
        raise ConfigError(f"--length-buckets must be >= 0, got {args.length_buckets}")
    corpus = read_parallel(args.data, args.split, src, tgt)
    require_sacrebleu()  # fail before decoding, not after
    start = time.perf_counter()
    hyps, truncated = translate_lines(
        model, tok, corpus.src, beam_size=info["beam_size"], length_penalty=info["length_penalty"], batch_size=args.batch_size
    )
    seconds = time.perf_counter() - start
    scores = bleu_scores(hyps, corpus.tgt)
    by_length = bleu_by_length(corpus.src, hyps, corpus.tgt, buckets=args.length_buckets) if args.length_buckets else []
    if truncated:
        print(f"attnkit: warning: {truncated} source sentence(s) longer than {model.config.max_len} tokens were truncated", file=sys.stderr)
    if args.hypotheses is not None:
        try:
            atomic_write_text(args.hypotheses, "".join(h + "\n" for h in hyps))
        except OSError as e:
            raise DataError(f"cannot write --hypotheses {args.hypotheses}: {e.strerror or e}; nothing was written") from None
    record = {
        "split": args.split, "src": src, "tgt": tgt, "sentences": len(hyps), "beam_size": info["beam_size"],
        "length_penalty": info["length_penalty"], "seconds": seconds, **scores, "bleu_by_length": by_length,
    }
    if args.json:
        print(json.dumps(record))
        return 0
    print(f"{args.split} {src}->{tgt}: {len(hyps)} sentences, beam {info['beam_size']}, length penalty {info['length_penalty']}, {seconds:.1f}s")
    print(f"BLEU (cased)      = {scores['bleu']:.2f}  {scores['bleu_signature']}")
    print(f"BLEU (lowercased) = {scores['bleu_lc']:.2f}  {scores['bleu_lc_signature']}")
    for g in by_length:
        print(f"  source {g['min_words']}-{g['max_words']} words ({g['sentences']} sentences): BLEU {g['bleu']:.2f} cased, "
              f"{g['bleu_lc']:.2f} lowercased")
    return 0

"""Jobs for the encoder-decoder Transformer: the synthetic transduction tasks and translation.

Vaswani et al. 2017: teacher-forced training with label smoothing (section 5.4), greedy
decoding for exact match on held-out strings, and for translation a joint subword vocabulary,
token-count batches, the last checkpoints averaged and beam search scored with sacreBLEU
(sections 5.1, 6.1).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from attnkit.config import Config
from attnkit.errors import ConfigError
from attnkit.models.base import check_size
from attnkit.runs.base import Job, Log, Prepared
from attnkit.training.config import EvalConfig, OptimConfig, ScheduleConfig, TrainConfig
from attnkit.training.loop import TrainResult, Trainer, autocast_for, pick_device


class SyntheticJob(Job):
    """``attnkit train reverse|sort|copy``: learn a string transduction exactly (:mod:`attnkit.data.synthetic`).

    Evaluation reports the validation loss and greedy exact match on held-out strings; with
    ``data.n_test > 0`` a further set of strings, never used to choose the model, is scored once
    with the saved model at the end (``test_exact_match``).
    """

    summary = "encoder-decoder Transformer on a synthetic string transduction"
    metrics = ("loss", "exact_match")

    def __init__(self, kind: str) -> None:
        from attnkit.data.synthetic import SyntheticConfig
        from attnkit.models.transformer import TransformerConfig

        self.task = kind
        self.config_types = {"model": TransformerConfig, "train": TrainConfig, "data": SyntheticConfig}

    def defaults(self) -> dict[str, Config]:
        from attnkit.data.synthetic import DIGITS, SyntheticConfig
        from attnkit.data.tokenizer import char_tokenizer
        from attnkit.models.transformer import preset

        vocab = char_tokenizer(DIGITS).get_vocab_size()
        return {
            "model": preset("transformer-tiny", src_vocab_size=vocab, tgt_vocab_size=vocab),
            "train": TrainConfig(steps=2000, batch_size=64, log_every=20, optim=OptimConfig(lr=0.5), schedule=ScheduleConfig(warmup=400),
                                 eval=EvalConfig(every=250, metric="exact_match", mode="max")),
            "data": SyntheticConfig(kind=self.task),  # type: ignore[arg-type]
        }

    def check(self, configs: dict[str, Config]) -> None:
        from attnkit.data.synthetic import DIGITS
        from attnkit.data.tokenizer import char_tokenizer

        m, d = configs["model"], configs["data"]
        vocab = char_tokenizer(DIGITS).get_vocab_size()
        if m.src_vocab_size < vocab or m.tgt_vocab_size < vocab:  # type: ignore[attr-defined]
            raise ConfigError(f"model vocabulary {m.src_vocab_size} is smaller than the task's {vocab} tokens; "  # type: ignore[attr-defined]
                              "raise model.src_vocab_size and model.tgt_vocab_size")
        if d.kind != self.task:  # type: ignore[attr-defined]
            raise ConfigError(f"data.kind={d.kind!r} differs from the command's task {self.task!r}")  # type: ignore[attr-defined]

    def prepare(self, configs: dict[str, Config], out: Path, *, resume: bool, log: Log) -> Prepared:
        from attnkit.data.seq2seq import PairDataset
        from attnkit.models.transformer import Transformer
        from attnkit.training.tasks import Seq2SeqTask

        t, d = configs["train"], configs["data"]
        train_ds, valid_in, valid_out, tok, test = d.build()  # type: ignore[attr-defined]
        device = pick_device(t.device)  # type: ignore[attr-defined]
        check_size(Transformer, configs["model"], device, copies=4)  # before any weight is allocated
        task = Seq2SeqTask(
            train_ds, batch_size=t.batch_size, label_smoothing=t.reg.label_smoothing,  # type: ignore[attr-defined]
            valid=PairDataset([(tok.encode(a).ids, tok.encode(b).ids) for a, b in zip(valid_in, valid_out)], name="validation set"),
            heldout=(valid_in, valid_out), tokenizer=tok, device=device, exposure=t.exposure,  # type: ignore[attr-defined]
        )
        torch.manual_seed(t.seed)  # type: ignore[attr-defined]  # the initial weights are part of a reproducible run
        model = Transformer(configs["model"])  # type: ignore[arg-type]
        log(f"{self.task} digit strings: {len(train_ds):,} training pairs, {len(valid_in):,} validation, {len(test[0]):,} test; "
            f"{model.num_parameters():,} parameters on {device}")
        return Prepared(model=model, task=task, configs=configs, tokenizer=tok, state={"test": test, "device": device})

    def finish(self, prepared: Prepared, trainer: Trainer, result: TrainResult, out: Path, log: Log) -> dict[str, Any]:
        import attnkit
        from attnkit.training.tasks import translate_strings

        final = super().finish(prepared, trainer, result, out, log)
        test_in, test_out = prepared.state["test"]
        if test_in:
            model = attnkit.load(out / "model").to(prepared.state["device"])
            preds = translate_strings(model, prepared.tokenizer, test_in, device=prepared.state["device"], batch_size=256)
            prepared.state["predictions"] = preds
            final["test_exact_match"] = sum(p == a for p, a in zip(preds, test_out)) / len(test_out)
        return final


class TranslateJob(Job):
    """``attnkit train translate``: a parallel corpus, Vaswani et al. 2017's recipe.

    A joint subword vocabulary is learned on the training split (saved as ``tokenizer.json``)
    and the model's vocabulary sizes are set from it; batches hold about ``data.max_tokens``
    tokens of sentences of similar length. After training the last ``data.average_last``
    checkpoints are averaged into ``OUT/model`` (section 6.1), which is evaluated on the
    validation split and, with ``data.test_split``, translated with beam search and scored
    with sacreBLEU on that split (``test_bleu``, ``test_bleu_lc``, and by thirds of source length
    ``test_bleu_by_length``). ``train.exposure`` picks what the decoder reads in training
    (:mod:`attnkit.training.exposure`).
    """

    task = "translate"
    summary = "encoder-decoder Transformer on a parallel corpus"
    metrics = ("loss", "bleu")

    def __init__(self) -> None:
        from attnkit.models.transformer import TransformerConfig
        from attnkit.training.translation import TranslationConfig

        self.config_types = {"model": TransformerConfig, "train": TrainConfig, "data": TranslationConfig}

    def defaults(self) -> dict[str, Config]:
        from attnkit.models.transformer import preset
        from attnkit.training.translation import TranslationConfig

        return {
            "model": preset("transformer-base"),
            "train": TrainConfig(steps=6000, log_every=50, save_every=500, keep_checkpoints=5, optim=OptimConfig(lr=0.5),
                                 schedule=ScheduleConfig(warmup=1000), eval=EvalConfig(every=500)),
            "data": TranslationConfig(src="", tgt=""),  # the language pair is the user's to name
        }

    def check(self, configs: dict[str, Config]) -> None:
        from attnkit.training.translation import check_recipe

        d = configs["data"]
        missing = [flag for flag, value in (("--data DIR", d.data), ("--src LANG", d.src), ("--tgt LANG", d.tgt)) if not value]  # type: ignore[attr-defined]
        if missing:
            raise ConfigError(f"attnkit train translate needs {', '.join(missing)} (e.g. --src de --tgt en --data data/multi30k), "
                              "or --recipe NAME --data-root DIR")
        check_recipe(configs["train"], d)  # type: ignore[arg-type]

    def prepare(self, configs: dict[str, Config], out: Path, *, resume: bool, log: Log) -> Prepared:
        import dataclasses

        from attnkit.data.parallel import TokenBatches
        from attnkit.models.transformer import Transformer
        from attnkit.training.translation import TranslationTask, encode_pairs, prepare_tokenizer

        t, d = configs["train"], configs["data"]
        train_corpus = d.read(d.train_split, limit=d.max_pairs)  # type: ignore[attr-defined]
        valid_corpus = d.read(d.valid_split)  # type: ignore[attr-defined]
        test_corpus = d.read(d.test_split) if d.test_split else None  # type: ignore[attr-defined]
        init = None
        if d.init is not None and not resume:  # type: ignore[attr-defined]  # start from a pretrained model and its tokenizer
            from attnkit.runs.denoising import load_init

            init, tok = load_init(d.init, out)  # type: ignore[attr-defined]
        else:
            tok = prepare_tokenizer(d, train_corpus, out, reuse=resume)  # type: ignore[arg-type]
        vocab = tok.get_vocab_size()
        m = dataclasses.replace(configs["model"], src_vocab_size=vocab, tgt_vocab_size=vocab)  # type: ignore[type-var]
        if init is not None:
            from attnkit.runs.denoising import adopt_architecture

            m = adopt_architecture(init.config, m)
        device = pick_device(t.device)  # type: ignore[attr-defined]
        check_size(Transformer, m, device, copies=4)  # before any weight is allocated
        train_ds = TokenBatches(encode_pairs(tok, train_corpus, m.max_len), d.max_tokens, name=f"{d.train_split} split")  # type: ignore[attr-defined]
        valid_ds = TokenBatches(encode_pairs(tok, valid_corpus, m.max_len), d.max_tokens, name=f"{d.valid_split} split")  # type: ignore[attr-defined]
        n = d.bleu_sentences  # type: ignore[attr-defined]
        task = TranslationTask(
            train_ds, valid=valid_ds, tokenizer=tok, label_smoothing=t.reg.label_smoothing,  # type: ignore[attr-defined]
            bleu_sources=valid_corpus.src[:n], bleu_references=valid_corpus.tgt[:n],
            beam_size=d.beam_size, length_penalty=d.length_penalty, device=device, exposure=t.exposure,  # type: ignore[attr-defined]
        )
        torch.manual_seed(t.seed)  # type: ignore[attr-defined]
        model = Transformer(m)
        if init is not None:
            model.load_state_dict(init.state_dict())
            log(f"initialised from {d.init} (its architecture, weights and tokenizer)")  # type: ignore[attr-defined]
        log(f"training {d.src}->{d.tgt} on {d.data}: {len(train_corpus.src):,} pairs, vocabulary {vocab} {d.tokenizer}, "  # type: ignore[attr-defined]
            f"~{d.max_tokens} tokens per batch; {model.num_parameters() / 1e6:.1f}M parameters on {device}")  # type: ignore[attr-defined]
        return Prepared(model=model, task=task, configs={**configs, "model": m}, tokenizer=tok,
                        state={"device": device, "test": test_corpus})

    def finish(self, prepared: Prepared, trainer: Trainer, result: TrainResult, out: Path, log: Log) -> dict[str, Any]:
        from attnkit.training.averaging import save_averaged
        from attnkit.training.checkpoint import list_checkpoints
        from attnkit.metrics import bleu_by_length, bleu_scores
        from attnkit.training.translation import save_translation_info, translate_lines

        t, d = prepared.configs["train"], prepared.configs["data"]
        device = prepared.state["device"]
        averaged = list_checkpoints(out)[-d.average_last :]  # type: ignore[attr-defined]
        model = save_averaged(averaged, out / "model").to(device)
        save_translation_info(out / "model", d)  # type: ignore[arg-type]
        model.eval()
        with torch.no_grad(), autocast_for(device, t.execution.precision):  # type: ignore[attr-defined]
            final: dict[str, Any] = {f"valid_{k}": v for k, v in prepared.task.evaluate(model).items()}
        log(f"averaged {len(averaged)} checkpoints ({', '.join(p.name for p in averaged)}) into {out / 'model'}")
        test = prepared.state["test"]
        if test is not None:
            with autocast_for(device, t.execution.precision):  # type: ignore[attr-defined]
                hyps, _ = translate_lines(model, prepared.tokenizer, test.src, beam_size=d.beam_size,  # type: ignore[attr-defined]
                                          length_penalty=d.length_penalty, device=device)  # type: ignore[attr-defined]
            scores = bleu_scores(hyps, test.tgt)
            final.update(test_bleu=scores["bleu"], test_bleu_lc=scores["bleu_lc"], test_bleu_signature=scores["bleu_signature"])
            final["test_bleu_by_length"] = bleu_by_length(test.src, hyps, test.tgt)
            (out / "model" / f"{d.test_split}.hyp.{d.tgt}").write_text("\n".join(hyps) + "\n", encoding="utf-8")  # type: ignore[attr-defined]
        final["averaged"] = [p.name for p in averaged]
        return final

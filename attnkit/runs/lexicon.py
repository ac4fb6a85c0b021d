"""The masking units of ERNIE's knowledge masking (Sun et al. 2019, section 3.2) for ``attnkit train mlm``.

ERNIE masks phrases and named entities as units, found by a chunker and an entity recogniser. Three
sources make the :class:`~attnkit.data.segment.PhraseLexicon` here, any together:

* ``data.phrases=FILE``: a lexicon, one phrase or entity a line;
* ``data.phrases=auto``: the text's collocations (:mod:`attnkit.data.phrases`), written to ``OUT/phrases.txt``;
* ``data.entity_tagger=DIR``: the entities that a tagger from ``attnkit finetune ner`` (BERT-family or
  XLNet) finds in the text's sentences, read as white-space words, written to ``OUT/entities.txt``.

Each file written holds one unit a line, to read, edit and give a later stage as ``--phrases FILE``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Sequence

from attnkit.errors import ConfigError, DataError
from attnkit.io import atomic_write_text
from attnkit.runs.base import Log

EDGE_PUNCTUATION = "\"'`.,;:!?()[]{}<>«»“”‘’"


def tagged_entities(tagger_dir: str | Path, sentences: Sequence[str], *, device: Any = "cpu", batch_size: int = 64) -> list[str]:
    """The distinct entities (case-insensitively; first spelling kept) that the tagger in ``tagger_dir`` finds in
    ``sentences``, each the words of one B-/I- chunk joined by a space, punctuation at its two ends removed."""
    import torch

    from attnkit.data.conll import TaggedSentences
    from attnkit.loading import load_model_and_tokenizer
    from attnkit.metrics import entities
    from attnkit.models.bert_heads import BertTagger
    from attnkit.models.xlnet_heads import XLNetTagger
    from attnkit.training import finetune as ft
    from attnkit.training import pick_device

    dev = pick_device(device)
    model, tok = load_model_and_tokenizer(tagger_dir, map_location=dev)
    if not isinstance(model, (BertTagger, XLNetTagger)):
        raise ConfigError(f"data.entity_tagger={tagger_dir} holds a {type(model).__name__}; give a tagger from attnkit finetune ner")
    labels = list(model.config.labels)
    words = [s.split() for s in sentences if s.split()]
    if not words:
        return []
    enc = ft.encode_tagging(tok, TaggedSentences(words, None), labels, model.config.encoder.max_len)
    model.eval()
    with torch.no_grad():
        logits = ft.predict_logits(model, enc, pad_id=tok.pad_id, batch_size=batch_size, device=dev)
    tags = ft.word_tags(logits, enc.word_ids, [len(w) for w in words], labels)
    found: dict[str, str] = {}
    for sentence, sentence_tags in zip(words, tags):
        for _, start, end in entities([sentence_tags]):  # word positions within the sentence
            name = " ".join(sentence[start : end + 1]).strip(EDGE_PUNCTUATION)
            if name:
                found.setdefault(name.lower(), name)
    return sorted(found.values(), key=str.lower)


def unit_lexicon(d: Any, texts: list[list[str]], out: Path, log: Log, *, device: Any = "cpu") -> Any:
    """The :class:`~attnkit.data.segment.PhraseLexicon` of ``d.phrases`` and ``d.entity_tagger`` over the documents
    ``texts`` (lists of sentences), or None when neither is set."""
    from attnkit.data.phrases import collocation_phrases
    from attnkit.data.segment import PhraseLexicon

    units: list[str] = PhraseLexicon.from_file(d.phrases).phrases if d.phrases and d.phrases != "auto" else []
    found_in_text: list[tuple[str, Callable[[], list[str]], str]] = []  # (file, finder, what an empty result means)
    if d.phrases == "auto":
        found_in_text.append(("phrases.txt", lambda: collocation_phrases(("\n".join(doc) for doc in texts), threshold=d.phrase_threshold),
                              f"data.phrases=auto found no phrase above data.phrase_threshold={d.phrase_threshold:g} in the text; "
                              "lower the threshold or give a lexicon file"))
    if d.entity_tagger:
        found_in_text.append(("entities.txt", lambda: tagged_entities(d.entity_tagger, [s for doc in texts for s in doc], device=device),
                              f"the tagger data.entity_tagger={d.entity_tagger} found no entity in the text; "
                              "check that it was trained on text like this one"))
    for name, find, empty in found_in_text:
        found = find()
        if not found:
            raise DataError(empty)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / name, "".join(u + "\n" for u in found))
        log(f"{name.removesuffix('.txt')}: {len(found)} found in the text ({', '.join(found[:5])}{', ...' if len(found) > 5 else ''}); "
            f"written to {out / name}")
        units += found
    return PhraseLexicon(units) if units else None


__all__ = ["tagged_entities", "unit_lexicon"]

"""Tiny saved models with tokenizers (BERT, GPT, encoder-decoder) for the viz tests."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from attnkit.data.subword import train_subword_tokenizer
from attnkit.data.wordpiece import WordPieceTokenizer
from attnkit.models import GPT, BertModel, Transformer, bert_preset, gpt_preset, preset

CORPUS = ["the quick brown fox jumps over the lazy dog", "unbelievable attention heads look at tokens",
          "a small model reads a short sentence", "transformers attend to every position"] * 4


@pytest.fixture(scope="session")
def model_dirs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("viz_models")
    (root / "corpus.txt").write_text("\n".join(CORPUS) + "\n")
    torch.manual_seed(0)
    wp = WordPieceTokenizer.train([root / "corpus.txt"], vocab_size=90)
    bert = BertModel(bert_preset("bert-test", vocab_size=wp.vocab_size))
    bert.save_pretrained(root / "bert", tokenizer=wp)
    bpe = train_subword_tokenizer(CORPUS, 160)
    n = bpe.get_vocab_size()
    GPT(gpt_preset("gpt-tiny", vocab_size=n)).save_pretrained(root / "gpt", tokenizer=bpe)
    Transformer(preset("transformer-tiny", src_vocab_size=n, tgt_vocab_size=n)).save_pretrained(root / "seq2seq", tokenizer=bpe)
    return {"bert": root / "bert", "gpt": root / "gpt", "seq2seq": root / "seq2seq"}

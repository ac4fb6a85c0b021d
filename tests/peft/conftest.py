"""Tiny random-weight Hugging Face models (from their config classes) saved once per session."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="session")
def hf_bert_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    from transformers import BertConfig, BertForSequenceClassification

    torch.manual_seed(0)
    m = BertForSequenceClassification(BertConfig(vocab_size=99, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                                 intermediate_size=37, max_position_embeddings=64))
    d = tmp_path_factory.mktemp("hf_bert")
    m.save_pretrained(d)
    return str(d)


@pytest.fixture(scope="session")
def hf_gpt2_dir(tmp_path_factory: pytest.TempPathFactory) -> str:
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    m = GPT2LMHeadModel(GPT2Config(vocab_size=99, n_embd=32, n_layer=2, n_head=4, n_positions=64, bos_token_id=0, eos_token_id=0))
    d = tmp_path_factory.mktemp("hf_gpt2")
    m.save_pretrained(d)
    return str(d)


@pytest.fixture
def ids() -> torch.Tensor:
    return torch.randint(1, 99, (2, 6), generator=torch.Generator().manual_seed(1))

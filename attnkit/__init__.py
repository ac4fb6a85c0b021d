"""attnkit: the Transformer family end to end, in readable PyTorch.

>>> import attnkit
>>> model = attnkit.Transformer(attnkit.preset("transformer-tiny"))
>>> model.save_pretrained("ckpt"); model = attnkit.load("ckpt")
"""

from attnkit.errors import AttnkitError, CheckpointError, ConfigError, DataError
from attnkit.models import GPT, GPT_PRESETS, GPTConfig, gpt_preset
from attnkit.models import BertConfig, BertModel, bert_preset
from attnkit.models import PRESETS, Transformer, TransformerConfig, preset
from attnkit.loading import load, load_model_and_tokenizer

__version__ = "0.1.0"

__all__ = [
    "BertConfig",
    "BertModel",
    "bert_preset",
    "GPT",
    "GPTConfig",
    "GPT_PRESETS",
    "gpt_preset",
    "PRESETS",
    "AttnkitError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "Transformer",
    "TransformerConfig",
    "load",
    "load_model_and_tokenizer",
    "preset",
]

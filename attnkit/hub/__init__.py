"""Interchange with other checkpoint formats through declarative key maps.

>>> model = attnkit.load("hf-gpt2-dir")          # a Hugging Face GPT-2 directory, detected
>>> save_hf_gpt2(model, "out")                    # loads with GPT2LMHeadModel.from_pretrained
"""

from attnkit.hub.gpt2 import GPT2_KEYS, config_from_hf, config_to_hf, is_hf_gpt2, load_hf_gpt2, save_hf_gpt2
from attnkit.hub.keymap import TRANSFORMS, KeyMap, Rule

__all__ = [
    "GPT2_KEYS", "TRANSFORMS", "KeyMap", "Rule",
    "config_from_hf", "config_to_hf", "is_hf_gpt2", "load_hf_gpt2", "save_hf_gpt2",
]

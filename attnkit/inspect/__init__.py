"""Seeing attention: the probabilities of any kernel, per layer, head and query row, and their rollout.

>>> import torch, attnkit
>>> from attnkit.inspect import attentions
>>> model = attnkit.models.GPT(attnkit.models.gpt_preset("gpt-tiny"))
>>> att = attentions(model, torch.tensor([[1, 2, 3]]), layers=[0], rows=[2])
>>> att["self"][0].shape
torch.Size([1, 4, 1, 3])
"""

from attnkit.inspect.probs import probabilities
from attnkit.inspect.record import Attentions, Recorder, attention_groups, attentions
from attnkit.inspect.rollout import rollout, rollout_by_layer
from attnkit.inspect.words import merge, word_groups

__all__ = ["Attentions", "Recorder", "attention_groups", "attentions", "merge", "probabilities", "rollout", "rollout_by_layer", "word_groups"]

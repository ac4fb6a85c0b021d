"""Training objectives: losses that sit on top of the models' logits."""

from attnkit.objectives.causal_lm import causal_lm_loss
from attnkit.objectives.classification import classification_loss
from attnkit.objectives.label_smoothing import label_smoothed_cross_entropy, seq2seq_loss
from attnkit.objectives.mlm import MaskingConfig, mask_tokens, mlm_loss
from attnkit.objectives.pretraining import pretraining_loss
from attnkit.objectives.rdrop import rdrop_loss, symmetric_kl
from attnkit.objectives.span import span_loss

__all__ = ["MaskingConfig", "causal_lm_loss", "classification_loss", "label_smoothed_cross_entropy", "mask_tokens", "mlm_loss",
           "pretraining_loss", "rdrop_loss", "seq2seq_loss", "span_loss", "symmetric_kl"]

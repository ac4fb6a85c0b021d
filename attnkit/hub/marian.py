"""Hugging Face Marian checkpoints (``MarianMTModel``) <-> :class:`attnkit.models.transformer.Transformer`.

Marian (Junczys-Dowmunt et al. 2018, "Marian: Fast Neural Machine Translation in C++"; the OPUS-MT models)
trains the translation Transformer of Vaswani et al. 2017 as the paper describes it, and ``transformers``
builds it from BART's layers. Each part is an option of :class:`~attnkit.models.transformer.TransformerConfig`,
most of them its defaults:

* post-norm layers, x = LayerNorm(x + Sublayer(x)) (section 3.1) with no norm after either stack and none over
  the embeddings: ``norm_position="post"``, ``norm="layer"`` (eps 1e-5, which Hugging Face does not configure),
  ``embedding_norm=False``; ``MarianConfig`` has no pre-norm option;
* attention with biases and the 1/sqrt(d_k) scale (eq. 1), the FFN ``act(x W_1 + b_1) W_2 + b_2`` (eq. 2; ReLU in
  the paper, swish in OPUS-MT): ``bias=True``, ``activation`` (``activation_function``);
* the fixed sinusoids of section 3.5 added to both stacks' embeddings: ``positional="sinusoidal"``
  (``max_position_embeddings`` rows: ``max_len``);
* the embeddings multiplied by sqrt(d_model) (section 3.4) when ``scale_embedding``: ``scale_embeddings``;
* one token table for the encoder, the decoder and (with ``tie_word_embeddings``) the output layer (section 3.4),
  or, without ``share_encoder_decoder_embeddings``, a table per stack (``decoder_vocab_size`` rows in the
  decoder's): ``share_embeddings``, ``tie_output``; a bias on the logits (the ``final_logits_bias`` buffer):
  ``output_bias=True``;
* the decoder starts from ``decoder_start_token_id`` (the pad id in OPUS-MT): ``bos_id``.

The position table's layout is transformers' own, sines in the first half of the features and cosines in the
second; export renumbers the residual stream's features to match it and import renumbers them back
(:mod:`attnkit.hub.sinusoidal`, which this module and :mod:`attnkit.hub.pegasus` share). transformers does not save
Marian's table and rebuilds it from the formula; export writes none.

Not expressed (refused by field; the rest in :mod:`attnkit.hub.sinusoidal`): the pre-norm or embedding-norm
variants that older configs describe (``normalize_before``, ``add_final_layer_norm``, ``normalize_embedding``);
attnkit configs that are not Marian-shaped (a pre-norm one with sinusoids is Pegasus-shaped).
"""

from __future__ import annotations

from attnkit.hub.sinusoidal import SinusoidFamily

MODEL_TYPE = "marian"
MARIAN = SinusoidFamily(
    model_type=MODEL_TYPE,
    name="Marian",
    architecture="MarianMTModel",
    norm_position="post",
    # Fields of older Marian configs (transformers 4's conversions) whose other values describe a layer Marian's is not.
    refused={
        "normalize_before": (False, "Marian's layers are post-norm"),
        "add_final_layer_norm": (False, "Marian has no LayerNorm after either stack"),
        "normalize_embedding": (False, "Marian has no LayerNorm over the embeddings"),
        "static_position_embeddings": (True, "Marian's positions are the fixed sinusoids"),
        "add_bias_logits": (False, "the logits' bias is final_logits_bias"),
    },
    vocab_size=58101,
    pad_id=58100,
    eos_id=0,
    decoder_vocab=True,
    stores_positions=False,
)

marian_keys = MARIAN.keys
is_hf_marian = MARIAN.is_hf
marian_config_from_hf = MARIAN.config_from_hf
marian_from_hf = MARIAN.from_hf
load_hf_marian = MARIAN.load_hf
marian_config_to_hf = MARIAN.config_to_hf
marian_state_to_hf = MARIAN.state_to_hf
save_hf_marian = MARIAN.save

__all__ = ["MARIAN", "MODEL_TYPE", "is_hf_marian", "load_hf_marian", "marian_config_from_hf", "marian_config_to_hf",
           "marian_from_hf", "marian_keys", "marian_state_to_hf", "save_hf_marian"]

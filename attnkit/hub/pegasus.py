"""Hugging Face Pegasus checkpoints (``PegasusForConditionalGeneration``) <-> :class:`attnkit.models.transformer.Transformer`.

PEGASUS (Zhang et al. 2020, "PEGASUS: Pre-training with Extracted Gap-sentences for Abstractive Summarization")
pretrains an encoder-decoder Transformer (Vaswani et al. 2017) by gap-sentence generation; its released models,
which ``transformers`` builds from mBART's layers (BART's, normalised before each sublayer), add the fixed sinusoids
to the embeddings. Each part is an option of :class:`~attnkit.models.transformer.TransformerConfig`:

* pre-norm layers, x + Sublayer(LayerNorm(x)), and a LayerNorm after each stack (``encoder.layer_norm``,
  ``decoder.layer_norm``; attnkit's pre-norm stacks end with one too), none over the embeddings:
  ``norm_position="pre"``, ``norm="layer"`` (eps 1e-5, which Hugging Face does not configure),
  ``embedding_norm=False``; ``PegasusConfig`` has no post-norm option;
* attention with biases and the 1/sqrt(d_k) scale (Vaswani et al. eq. 1), the FFN ``act(x W_1 + b_1) W_2 + b_2``
  (ReLU in the released models): ``bias=True``, ``activation`` (``activation_function``);
* the fixed sinusoids of Vaswani et al. section 3.5 added to both stacks' embeddings: ``positional="sinusoidal"``
  (``max_position_embeddings`` rows: ``max_len``);
* the embeddings multiplied by sqrt(d_model) when ``scale_embedding`` (true in the released models): ``scale_embeddings``;
* one token table for the encoder, the decoder and (with ``tie_word_embeddings``) the output layer; without
  ``tie_word_embeddings`` transformers 5 gives each stack its own (``shared`` is then unread): ``share_embeddings``,
  ``tie_output``; one ``vocab_size`` for both; a bias on the logits (the ``final_logits_bias`` buffer, zeros in
  a fresh model): ``output_bias=True``;
* the decoder starts from ``decoder_start_token_id`` (the pad id, 0, in the released models; EOS 1): ``bos_id``.
  ``PegasusConfig`` has no ``bos_token_id``; export writes the decoder's start id there, as for Marian.

The position table is in halves, sines then cosines, as Marian's: export renumbers the residual stream's features
(the norms after the stacks included) and import renumbers them back (:mod:`attnkit.hub.sinusoidal`).
``save_pretrained`` writes Pegasus's tables and ``from_pretrained`` reads a stored table as it is (rebuilding it
from the formula, with a load report of missing keys, where it is absent); export writes the tables in halves,
and import refuses a stored table that is not the formula's.

Not expressed (refused by field; the rest in :mod:`attnkit.hub.sinusoidal`): the post-norm or embedding-norm
layers that older configs can describe (``normalize_before=false``, ``add_final_layer_norm=false``,
``normalize_embedding``); attnkit configs that are not Pegasus-shaped (a post-norm one with sinusoids is
Marian-shaped), or whose two stacks have vocabularies of different sizes. ``extra_pos_embeddings`` of older configs
is ignored, as transformers ignores it.
"""

from __future__ import annotations

from attnkit.hub.sinusoidal import SinusoidFamily

MODEL_TYPE = "pegasus"
PEGASUS = SinusoidFamily(
    model_type=MODEL_TYPE,
    name="Pegasus",
    architecture="PegasusForConditionalGeneration",
    norm_position="pre",
    # Fields of older Pegasus configs (transformers 4's conversions) whose other values describe a layer Pegasus's is not.
    refused={
        "normalize_before": (True, "Pegasus's layers are pre-norm"),
        "add_final_layer_norm": (True, "Pegasus has a LayerNorm after each stack"),
        "normalize_embedding": (False, "Pegasus has no LayerNorm over the embeddings"),
        "static_position_embeddings": (True, "Pegasus's positions are the fixed sinusoids"),
        "add_bias_logits": (False, "the logits' bias is final_logits_bias"),
    },
    vocab_size=50265,
    pad_id=0,
    eos_id=1,
    decoder_vocab=False,
    stores_positions=True,
)

pegasus_keys = PEGASUS.keys
is_hf_pegasus = PEGASUS.is_hf
pegasus_config_from_hf = PEGASUS.config_from_hf
pegasus_from_hf = PEGASUS.from_hf
load_hf_pegasus = PEGASUS.load_hf
pegasus_config_to_hf = PEGASUS.config_to_hf
pegasus_state_to_hf = PEGASUS.state_to_hf
save_hf_pegasus = PEGASUS.save

__all__ = ["MODEL_TYPE", "PEGASUS", "is_hf_pegasus", "load_hf_pegasus", "pegasus_config_from_hf", "pegasus_config_to_hf",
           "pegasus_from_hf", "pegasus_keys", "pegasus_state_to_hf", "save_hf_pegasus"]

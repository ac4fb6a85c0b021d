"""Denoising pretraining recipes of the encoder-decoder Transformer: T5 span corruption (Raffel et al. 2020),
BART (Lewis et al. 2020) and MASS (Song et al. 2019), each on tiny Shakespeare."""

from __future__ import annotations

from attnkit.models.transformer import preset
from attnkit.recipes import register
from attnkit.recipes.base import Recipe
from attnkit.runs.denoising import DenoisingDataConfig, default_train

QUICK = ("model.d_model=32", "model.n_heads=2", "model.d_ff=64", "model.n_encoder_layers=1", "model.n_decoder_layers=1",
         "train.steps=6", "train.batch_size=8", "train.schedule.warmup=2", "train.eval.every=3", "train.log_every=3",
         "data.vocab_size=300", "data.max_src_len=32", "data.max_documents=300", "data.max_valid=16", "data.n_sentinels=8")
WHAT = {
    "t5": "T5 span corruption (15% noise, mean span 3, sentinels; 128 inputs from runs of 141 tokens)",
    "bart": "BART text infilling (Poisson(3) spans over 30% of the tokens) and sentence permutation",
    "mass": "MASS (half of each run of sentences masked as one fragment, the decoder predicts it)",
}

for _name, _what in WHAT.items():
    register(Recipe(
        name=f"{_name}-shakespeare",
        task=_name,
        summary=f"tiny Shakespeare: a 3+3-layer pre-norm Transformer (d_model 256) pretrained by {_what}; BPE 8k learned from "
                "the text; AdamW lr 5e-4, 2,000 steps of 32 examples of 128 tokens",
        model=preset("transformer-small", norm_position="pre", max_len=512),
        train=default_train(),
        data=DenoisingDataConfig(text=("tinyshakespeare/input.txt",), vocab_size=8000, max_src_len=128),
        files=("data.text",),
        quick=QUICK,
    ))


# T5 span corruption on T5's own layer (Raffel et al. 2020, section 2.1): RMS norm before each sublayer, no biases,
# the bucketed relative position bias in place of position embeddings, unscaled embeddings, the decoder output
# scaled by d_model**-0.5 before the tied output layer; its checkpoint exports with attnkit.hub.save_hf_t5.
register(Recipe(
    name="t5-shakespeare-t5layer",
    task="t5",
    summary=f"tiny Shakespeare: a 3+3-layer T5-shaped Transformer (d_model 256; RMS pre-norm, no biases, T5 relative "
            f"position bias, tied and scaled output) pretrained by {WHAT['t5']}; exports as T5ForConditionalGeneration; "
            "BPE 8k learned from the text; AdamW lr 5e-4, 2,000 steps of 32 examples of 128 tokens",
    model=preset("transformer-small", norm_position="pre", max_len=512, norm="rms", norm_eps=1e-6, bias=False,
                 scale_embeddings=False, output_scale=256**-0.5,
                 attention={"position": {"kind": "t5_bias", "n_buckets": 32, "max_distance": 128}}),
    train=default_train(),
    data=DenoisingDataConfig(text=("tinyshakespeare/input.txt",), vocab_size=8000, max_src_len=128),
    files=("data.text",),
    quick=(*QUICK, "model.output_scale=0.1767766952966369"),  # d_model 32 in the quick run
))


# BART text infilling (and MASS) on BART's own layer (Lewis et al. 2020, section 2.1, as its released code builds it):
# post-norm layers with GELU and biases, learned positions (one table per stack), a LayerNorm over embeddings +
# positions, unscaled embeddings, a tied output layer with a bias; the checkpoint exports with attnkit.hub.save_hf_bart.
for _name in ("bart", "mass"):
    register(Recipe(
        name=f"{_name}-shakespeare-bartlayer",
        task=_name,
        summary=f"tiny Shakespeare: a 3+3-layer BART-shaped Transformer (d_model 256; post-norm, GELU, learned positions per "
                f"stack, embedding LayerNorm, unscaled embeddings, output bias) pretrained by {WHAT[_name]}; exports as "
                "BartForConditionalGeneration; BPE 8k learned from the text; AdamW lr 5e-4, 2,000 steps of 32 examples of 128 tokens",
        model=preset("transformer-small", max_len=512, positional="learned", share_positions=False, embedding_norm=True,
                     scale_embeddings=False, activation="gelu", output_bias=True),
        train=default_train(),
        data=DenoisingDataConfig(text=("tinyshakespeare/input.txt",), vocab_size=8000, max_src_len=128),
        files=("data.text",),
        quick=QUICK,
    ))


def _multi30k_pretraining(objective: str) -> Recipe:
    """Denoising on both monolingual sides of Multi30k's training split, with the multi30k-de-en Transformer."""
    from attnkit.recipes import get

    translate = get("multi30k-de-en")
    return Recipe(
        name=f"{objective}-multi30k",
        task=objective,
        summary=f"Multi30k's German and English training sentences, each a document: the multi30k-de-en Transformer "
                f"(3+3 layers, d_model 512, dropout 0.1 here) pretrained by {WHAT[objective]}; joint BPE 8k; 3,000 steps of 64",
        model=translate.model.replace(dropout=0.1),  # type: ignore[union-attr]
        train=default_train().replace(steps=3000, batch_size=64, eval=default_train().eval.replace(every=500)),
        data=DenoisingDataConfig(text=("multi30k/train.de.gz", "multi30k/train.en.gz"), documents="lines", vocab_size=8000,
                                 max_src_len=128, valid_fraction=0.02),
        files=("data.text",),
        quick=(*(q for q in QUICK if not q.startswith("data.max_documents=")), "data.max_documents=3000", "data.valid_fraction=0.05"),
    )


def _multi30k_translation(objective: str) -> Recipe:
    """multi30k-de-en started from the denoising stage's weights and tokenizer."""
    from attnkit.recipes import get
    from attnkit.recipes.base import Stage

    translate = get("multi30k-de-en")
    return Recipe(
        name=f"multi30k-de-en-{objective}",
        task="translate",
        summary=f"multi30k-de-en started from {objective}-multi30k (its architecture, weights and tokenizer; dropout 0.3 again): "
                "the same steps, averaging and beam search",
        model=translate.model,
        train=translate.train,
        data=translate.data,
        files=translate.files,
        on_cuda=translate.on_cuda,
        quick=translate.quick,
        before=(Stage(f"{objective}-multi30k", feeds="data.init"),),
    )


for _name in ("bart", "mass"):
    register(_multi30k_pretraining(_name))
    register(_multi30k_translation(_name))

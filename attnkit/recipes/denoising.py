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

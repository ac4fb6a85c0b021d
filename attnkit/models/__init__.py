"""Models: assemblies of the shared layers, each with a config, presets and save/load."""

from attnkit.models.base import PretrainedModel, load, model_types, register_model
from attnkit.models.bert import BERT_PRESETS, BertConfig, BertModel, BertOutput, bert_preset
from attnkit.models.bert_heads import BertClassifier, BertMLM, BertQA, BertTagger, BertTaskConfig, ElectraDiscriminator, HeadOutput
from attnkit.models.bert_pretraining import BertPretraining, BertPretrainingConfig, PretrainingOutput
from attnkit.models.electra import ElectraPretraining, ElectraPretrainingConfig  # noqa: F401  (registers electra-pretraining)
from attnkit.models.unilm import UnilmMLM  # noqa: F401  (registers unilm-mlm)
from attnkit.models.xlnet import XLNetConfig, XLNetLM, XLNetModel  # noqa: F401  (registers xlnet, xlnet-lm)
from attnkit.models.xlnet_heads import XLNetClassifier, XLNetTagger, XLNetTaskConfig  # noqa: F401  (registers the heads)
from attnkit.models.chunked import ChunkedClassifier  # noqa: F401  (registers bert-chunked-classifier)
from attnkit.models.features import FeatureModel  # noqa: F401  (registers bert-features)
from attnkit.models.gpt import GPT, GPT_PRESETS, GPTConfig, LMOutput, gpt_preset
from attnkit.models.transformer import PRESETS, AttentionConfig, Seq2SeqOutput, Transformer, TransformerConfig, preset
from attnkit.models.encoder_classifier import CLASSIFIER_PRESETS, ClassifierOutput, EncoderClassifier, EncoderClassifierConfig, classifier_preset

__all__ = [
    "CLASSIFIER_PRESETS",
    "ClassifierOutput",
    "EncoderClassifier",
    "EncoderClassifierConfig",
    "classifier_preset",
    "BERT_PRESETS",
    "BertClassifier",
    "BertConfig",
    "BertMLM",
    "BertModel",
    "BertOutput",
    "BertPretraining",
    "BertPretrainingConfig",
    "PretrainingOutput",
    "BertQA",
    "BertTagger",
    "BertTaskConfig",
    "ElectraDiscriminator",
    "HeadOutput",
    "bert_preset",
    "GPT",
    "GPTConfig",
    "GPT_PRESETS",
    "LMOutput",
    "gpt_preset",
    "PRESETS",
    "AttentionConfig",
    "PretrainedModel",
    "Seq2SeqOutput",
    "Transformer",
    "TransformerConfig",
    "load",
    "model_types",
    "preset",
    "register_model",
]

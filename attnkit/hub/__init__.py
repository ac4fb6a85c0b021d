"""Interchange with other checkpoint formats through declarative key maps.

>>> model = attnkit.load("hf-gpt2-dir")          # a Hugging Face GPT-2 directory, detected
>>> save_hf_gpt2(model, "out")                    # loads with GPT2LMHeadModel.from_pretrained
>>> model = attnkit.load("hf-bert-dir")          # BERT / RoBERTa / ALBERT / ELECTRA, detected
>>> save_hf_bert(model, "out", family="bert")     # loads with BertModel.from_pretrained (or the head's class)
>>> model = attnkit.load("hf-llama-dir")         # Llama / Mistral / Qwen2, detected
>>> save_hf_llama(model, "out")                   # the family its options express
>>> model = attnkit.load("hf-t5-dir")            # T5ForConditionalGeneration (1.0 and v1.1), detected
>>> save_hf_t5(model, "out")                      # a T5-shaped Transformer, loads with T5ForConditionalGeneration
>>> model = attnkit.load("hf-bart-dir")          # BartForConditionalGeneration, detected
>>> save_hf_bart(model, "out")                    # a BART-shaped Transformer, loads with BartForConditionalGeneration
>>> model = attnkit.load("hf-marian-dir")        # MarianMTModel, detected
>>> save_hf_marian(model, "out")                  # a Transformer of Vaswani et al. (sinusoids, post-norm), loads with MarianMTModel
>>> model = attnkit.load("hf-pegasus-dir")       # PegasusForConditionalGeneration, detected
>>> save_hf_pegasus(model, "out")                 # a pre-norm Transformer with sinusoids, loads with PegasusForConditionalGeneration
>>> model = attnkit.load("hf-xlnet-dir")         # XLNetLMHeadModel, XLNetFor{Sequence,Token}Classification, detected
>>> save_hf_xlnet(model, "out")                   # an XLNetLM, XLNetClassifier or XLNetTagger
"""

from attnkit.hub.bart import bart_from_hf, is_hf_bart, load_hf_bart, save_hf_bart
from attnkit.hub.bert import is_hf_bert, load_hf_bert, save_hf_bert
from attnkit.hub.gpt2 import GPT2_KEYS, config_from_hf, config_to_hf, is_hf_gpt2, load_hf_gpt2, save_hf_gpt2
from attnkit.hub.keymap import TRANSFORMS, Fuse, KeyMap, Rule
from attnkit.hub.llama import is_hf_llama, load_hf_llama, save_hf_llama
from attnkit.hub.marian import is_hf_marian, load_hf_marian, marian_from_hf, save_hf_marian
from attnkit.hub.pegasus import is_hf_pegasus, load_hf_pegasus, pegasus_from_hf, save_hf_pegasus
from attnkit.hub.t5 import is_hf_t5, load_hf_t5, save_hf_t5, t5_from_hf
from attnkit.hub.xlnet import is_hf_xlnet, load_hf_xlnet, save_hf_xlnet, xlnet_from_hf

__all__ = [
    "GPT2_KEYS", "TRANSFORMS", "Fuse", "KeyMap", "Rule",
    "is_hf_bert", "load_hf_bert", "save_hf_bert",
    "config_from_hf", "config_to_hf", "is_hf_gpt2", "load_hf_gpt2", "save_hf_gpt2",
    "is_hf_llama", "load_hf_llama", "save_hf_llama",
    "is_hf_t5", "load_hf_t5", "save_hf_t5", "t5_from_hf",
    "bart_from_hf", "is_hf_bart", "load_hf_bart", "save_hf_bart",
    "is_hf_marian", "load_hf_marian", "marian_from_hf", "save_hf_marian",
    "is_hf_pegasus", "load_hf_pegasus", "pegasus_from_hf", "save_hf_pegasus",
    "is_hf_xlnet", "load_hf_xlnet", "save_hf_xlnet", "xlnet_from_hf",
]

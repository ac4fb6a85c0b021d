"""Soft prompts at the input: prompt tuning (Lester et al. 2021) and P-tuning (Liu et al. 2021).

Prompt tuning (Lester et al. 2021, section 2): the frozen model reads ``n`` trainable *virtual
token* embeddings before the embeddings of the real tokens. They are initialised randomly
(uniformly in [-0.5, 0.5], section 3.2), from the embeddings of sampled vocabulary tokens, or
from the embeddings of a text's tokens (section 3.2, "class label" and text initialisation),
repeated to length ``n``.

P-tuning (Liu et al. 2021, section 3.2): the virtual embeddings are produced by a *prompt
encoder* from ``n`` free vectors, a bidirectional LSTM followed by a two-layer ReLU MLP (or an
MLP alone), which ties the prompts to each other; after training only the embeddings are kept.
The encoder's ``n`` input vectors are an embedding table, N(0, 1) (the paper's released code and
peft hold them as one); the LSTM and linear layers keep PyTorch's default initialisation.
The paper places prompt tokens at template positions; here, as in peft, they all go first.

The virtual tokens go through the model's embedding layer like real ones: they get positions
``0 .. n-1`` and segment 0 (the real tokens move to ``n ..``), the padding mask marks them real,
and per-token outputs (tagging, QA, language-model logits) drop their ``n`` positions, so a task
reads outputs for its own tokens only. A classifier that reads the first position reads the
first virtual token (as peft does). A GPT with soft prompts trains and scores text through its
forward pass; its cached decoding step (generation) is refused.
"""

from __future__ import annotations

import types
from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn

from attnkit.config import Config, check
from attnkit.errors import ConfigError


@dataclass(frozen=True, kw_only=True)
class PromptConfig(Config):
    """Soft-prompt settings.

    ``encoder``: ``none`` (prompt tuning), ``lstm`` or ``mlp`` (P-tuning's prompt encoder with
    ``hidden`` units). ``init``: ``random``, ``vocab`` (embeddings of random vocabulary tokens) or
    ``text`` (the embeddings of ``init_text``'s tokens, given to :func:`apply_prompt` as ids).
    """

    n_virtual: int = 20
    encoder: Literal["none", "lstm", "mlp"] = "none"
    hidden: int = 128
    init: Literal["random", "vocab", "text"] = "random"
    init_text: str = ""
    modules_to_save: tuple[str, ...] | None = None

    def validate(self) -> None:
        check(self.n_virtual > 0, "n_virtual", self.n_virtual, "must be positive")
        check(self.hidden > 0, "hidden", self.hidden, "must be positive")
        check(self.init != "text" or bool(self.init_text), "init_text", self.init_text, "must be a text when init='text'")


class PromptEncoder(nn.Module):
    """``n`` virtual token embeddings ``(n, d)``: free (prompt tuning) or from P-tuning's LSTM/MLP encoder.

    Args:
        n_virtual: number of virtual tokens.
        d_model: embedding width.
        encoder: ``none``, ``lstm`` (a 2-layer bi-LSTM, then Linear-ReLU-Linear of width ``2 hidden``) or
            ``mlp`` (Linear-ReLU-Linear-ReLU-Linear of width ``hidden``); the sizes of peft's prompt encoder.
        hidden: the encoder's hidden width.
        init: ``(n, d)`` initial embeddings; by default uniform in [-0.5, 0.5] for prompt tuning
            (Lester et al. 2021, section 3.2) and N(0, 1) for the input of P-tuning's encoder.
    """

    def __init__(self, n_virtual: int, d_model: int, encoder: str = "none", hidden: int = 128, init: Tensor | None = None) -> None:
        super().__init__()
        self.n_virtual, self.kind = n_virtual, encoder
        if init is None:
            init = torch.empty(n_virtual, d_model).uniform_(-0.5, 0.5) if encoder == "none" else torch.randn(n_virtual, d_model)
        self.embedding = nn.Parameter(init.clone())
        self.lstm: nn.LSTM | None = None
        self.mlp: nn.Sequential | None = None
        if encoder == "lstm":
            self.lstm = nn.LSTM(d_model, hidden, num_layers=2, bidirectional=True, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(2 * hidden, 2 * hidden), nn.ReLU(), nn.Linear(2 * hidden, d_model))
        elif encoder == "mlp":
            self.mlp = nn.Sequential(nn.Linear(d_model, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(),
                                     nn.Linear(hidden, d_model))

    def forward(self) -> Tensor:
        h = self.embedding  # (n, d)
        if self.lstm is not None:
            h = self.lstm(h[None])[0][0]  # (n, 2 * hidden)
        return self.mlp(h) if self.mlp is not None else h  # (n, d)

    @torch.no_grad()
    def freeze_table(self) -> None:
        """Replace the encoder by the embeddings it computes (what is kept after training)."""
        if self.mlp is not None:
            self.embedding = nn.Parameter(self().detach().clone())
            self.lstm, self.mlp, self.kind = None, None, "none"


def token_embedding(model: nn.Module) -> nn.Embedding:
    """The token embedding table of an attnkit BERT-family model (``bert.embed.tokens``) or GPT (``tok_embed``)."""
    for name in ("bert.embed.tokens", "embed.tokens", "tok_embed"):
        try:
            m = model.get_submodule(name)
        except AttributeError:
            continue
        if isinstance(m, nn.Embedding):
            return m
    raise ConfigError(f"{type(model).__name__} has no token embedding (bert.embed.tokens or tok_embed) for soft prompts")


def _replace_first(module: nn.Module, inputs: Any, output: Tensor) -> Tensor | None:
    enc = module._prompt_encoder  # type: ignore[attr-defined]
    if not enc.active:
        return None
    p = enc.encoder().to(output.dtype)  # (n, d)
    return torch.cat([p.expand(output.shape[0], -1, -1), output[:, p.shape[0]:]], dim=1)  # (B, n + T, d)


def _prompted_forward(self: nn.Module, ids: Tensor, *args: Any, attention_mask: Tensor | None = None,
                      segment_ids: Tensor | None = None, **kw: Any) -> Any:
    """The model's forward with ``n`` virtual tokens first; per-token outputs drop them again."""
    enc = self.prompt_encoder
    n, b = enc.n_virtual, ids.shape[0]
    if kw.get("caches") is not None:
        _no_cached_decoding(self)
    ids = torch.cat([ids.new_zeros(b, n), ids], dim=1)  # placeholders, replaced in the embedding
    if attention_mask is not None:
        attention_mask = torch.cat([attention_mask.new_ones(b, n), attention_mask], dim=1)
    if segment_ids is not None:
        kw["segment_ids"] = torch.cat([segment_ids.new_zeros(b, n), segment_ids], dim=1)
    positions = kw.get("positions")  # rows asked of a per-token head, counted in the real tokens
    if positions is not None:
        kw["positions"] = positions + n
    enc.active = True
    try:
        out = type(self).forward(self, ids, *args, attention_mask=attention_mask, **kw)
    finally:
        enc.active = False
    if out.logits.dim() == 3 and positions is None:  # per-token outputs: the real tokens' only
        out.logits = out.logits[:, n:]
        if hasattr(out, "hidden"):
            out.hidden = out.hidden[:, n:]
    return out


def _no_cached_decoding(self: nn.Module, *args: Any, **kw: Any) -> Any:
    raise ConfigError("a soft-prompt adapter (prompt, ptuning) does not support cached decoding (generate); "
                      "use prefix tuning or LoRA to adapt a GPT for generation")


class _Prompts(nn.Module):
    """Holds the encoder and whether the embedding hook is on (only inside the prompted forward)."""

    def __init__(self, encoder: PromptEncoder) -> None:
        super().__init__()
        self.encoder = encoder
        self.active = False

    @property
    def n_virtual(self) -> int:
        return self.encoder.n_virtual


def apply_prompt(model: nn.Module, config: PromptConfig, init_ids: list[int] | None = None) -> nn.Module:
    """Put ``n`` trainable virtual tokens before every input of ``model``, in place.

    Args:
        model: an attnkit BERT-family model or GPT.
        config: the prompt settings.
        init_ids: token ids of ``config.init_text`` (for ``init="text"``), repeated to ``n``.

    Returns:
        ``model``; its base frozen, ``model.prompt_encoder`` and the head (``modules_to_save``) trainable.
    """
    from attnkit.peft.lora import freeze, head_modules

    emb = token_embedding(model)
    keep = config.modules_to_save if config.modules_to_save is not None else head_modules(model)
    freeze(model, keep)
    n = config.n_virtual
    init = None
    if config.init == "text":
        if not init_ids:
            raise ConfigError("peft.init='text' needs the token ids of peft.init_text (the text is empty after tokenizing)")
        ids = torch.tensor((list(init_ids) * (n // len(init_ids) + 1))[:n])
        init = emb.weight.detach()[ids.to(emb.weight.device)].float().cpu()
    elif config.init == "vocab":
        init = emb.weight.detach()[torch.randint(0, emb.num_embeddings, (n,))].float().cpu()
    encoder = PromptEncoder(n, emb.embedding_dim, config.encoder, config.hidden, init).to(emb.weight.device)
    model.prompt_encoder = _Prompts(encoder)
    object.__setattr__(emb, "_prompt_encoder", model.prompt_encoder)
    emb.register_forward_hook(_replace_first)
    model.forward = types.MethodType(_prompted_forward, model)
    if hasattr(model, "next_token_logits"):  # a decoding step would bypass the prompt: refused, not silently wrong
        model.next_token_logits = types.MethodType(_no_cached_decoding, model)
    return model


__all__ = ["PromptConfig", "PromptEncoder", "apply_prompt", "token_embedding"]

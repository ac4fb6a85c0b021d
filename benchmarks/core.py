"""attnkit against torch.nn on the core Transformer: one encoder layer, and a full training step.

Run from the repository root:

    python benchmarks/core.py                       # CUDA if present: transformer-base sizes
    python benchmarks/core.py --quick --device cpu  # tiny sizes, a smoke test (< 60 s)

Everything runs in one process on the same inputs and, for each case, the same weights
(copied from the torch module into the attnkit one):

1. Correctness, fp32, eval mode: a ``torch.nn.TransformerEncoderLayer`` and a whole
   ``torch.nn.Transformer`` based model are copied into ``attnkit.layers.EncoderLayer``
   and ``attnkit.Transformer``; outputs and gradients must match before anything is timed.
2. One encoder layer, forward + backward, bf16 autocast, training mode (dropout 0.1 on
   attention weights, FFN activations and both residual branches, as torch does).
3. One encoder-decoder training step (transformer-base: d=512, h=8, 6+6 layers, d_ff=2048,
   shared 32k vocabulary): forward, label-smoothed cross-entropy, backward, fused AdamW.
   Sources and targets are right-padded to realistic lengths, so both models use their
   source padding masks; the decoders use only the causal mask (torch gets
   ``tgt_is_causal=True``, which puts its self-attention on SDPA's causal kernel).
   One more case uses unpadded batches, where torch is run without padding masks (its
   fastest path) and a diagnostic row prices attnkit's always-built source mask.

The table at the end gives ``ratio = torch_ms / attnkit_ms`` (>= 1.0: attnkit is no slower).
See BENCHMARKS.md for the method and the recorded numbers.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # run from a checkout without installing

import attnkit  # noqa: E402
from attnkit.layers import EncoderLayer, LayerSpec  # noqa: E402
from attnkit.models.transformer import AttentionConfig  # noqa: E402
from attnkit.training import build_optimizer  # noqa: E402
try:
    from benchmarks import common  # noqa: E402
except ImportError:  # another installed package is called "benchmarks": use the file beside this one
    import common  # type: ignore[no-redef]  # noqa: E402

warnings.filterwarnings("ignore", message=r".*enable_nested_tensor.*")
warnings.filterwarnings("ignore", message=r".*nested tensors is in prototype.*")

PAD, BOS = 0, 1
LABEL_SMOOTHING = 0.1
DROPOUT = 0.1
CHECK_TOLERANCE = 1e-3  # relative L2 error allowed in fp32 (a wrong weight mapping gives ~1)


@dataclass(frozen=True)
class Sizes:
    """Model sizes, the (batch, seq) shapes to time, and how long to time them."""

    d_model: int
    n_heads: int
    d_ff: int
    vocab: int
    n_layers: int  # per stack, encoder and decoder alike
    layer_shapes: tuple[tuple[int, int], ...]
    model_shapes: tuple[tuple[int, int], ...]
    warmup: int
    iters: int
    rounds: int


FULL = Sizes(
    d_model=512, n_heads=8, d_ff=2048, vocab=32000, n_layers=6,
    layer_shapes=((16, 512), (4, 2048)), model_shapes=((16, 512), (4, 2048)),
    warmup=10, iters=25, rounds=3,
)
QUICK = Sizes(
    d_model=32, n_heads=4, d_ff=64, vocab=96, n_layers=2,
    layer_shapes=((2, 16), (1, 32)), model_shapes=((2, 16),),
    warmup=1, iters=2, rounds=2,
)


# -- the torch reference model ------------------------------------------------------------
def sinusoids(max_len: int, d_model: int) -> Tensor:
    """Section 3.5 of Vaswani et al. 2017: sin on even, cos on odd features. ``(max_len, d_model)``."""
    pos = torch.arange(max_len, dtype=torch.float64)[:, None]  # (T, 1)
    inv_freq = torch.exp(-math.log(10000.0) * torch.arange(0, d_model, 2, dtype=torch.float64) / d_model)  # (d/2,)
    pe = torch.zeros(max_len, d_model, dtype=torch.float64)
    pe[:, 0::2] = torch.sin(pos * inv_freq)
    pe[:, 1::2] = torch.cos(pos * inv_freq)
    return pe.float()


class TorchSeq2Seq(nn.Module):
    """``torch.nn.Transformer`` with shared, scaled token embeddings, sinusoids and a tied output layer.

    Post-norm drops ``nn.Transformer``'s final encoder/decoder LayerNorms, which the paper
    (and attnkit's post-norm stacks) do not have; pre-norm keeps them.
    """

    def __init__(self, s: Sizes, norm_position: str, max_len: int) -> None:
        super().__init__()
        d = s.d_model
        self.embed = nn.Embedding(s.vocab, d, padding_idx=PAD)
        nn.init.normal_(self.embed.weight, std=d**-0.5)
        with torch.no_grad():
            self.embed.weight[PAD].zero_()
        self.register_buffer("pe", sinusoids(max_len, d), persistent=False)
        self.scale = math.sqrt(d)
        self.drop = nn.Dropout(DROPOUT)
        self.core = nn.Transformer(
            d, s.n_heads, s.n_layers, s.n_layers, s.d_ff, DROPOUT, batch_first=True, norm_first=norm_position == "pre"
        )
        if norm_position == "post":
            self.core.encoder.norm = None
            self.core.decoder.norm = None
        self.out = nn.Linear(d, s.vocab, bias=False)
        self.out.weight = self.embed.weight
        self._causal: dict[tuple[int, torch.device], Tensor] = {}

    def causal_mask(self, t: int, device: torch.device) -> Tensor:
        key = (t, device)
        if key not in self._causal:  # built once per length, not on every step
            self._causal[key] = nn.Transformer.generate_square_subsequent_mask(t, device=device)
        return self._causal[key]

    def forward(self, src: Tensor, tgt_in: Tensor, *, padding_mask: bool = True) -> Tensor:
        """``padding_mask=False`` skips the source padding mask: right only for batches without padding."""
        ts, tt = src.shape[1], tgt_in.shape[1]
        pad = (src == PAD) if padding_mask else None  # (B, Ts), True = padding (torch's convention)
        s = self.drop(self.embed(src) * self.scale + self.pe[:ts])  # (B, Ts, d)
        t = self.drop(self.embed(tgt_in) * self.scale + self.pe[:tt])  # (B, Tt, d)
        h = self.core(
            s, t,
            tgt_mask=self.causal_mask(tt, src.device), tgt_is_causal=True,
            src_key_padding_mask=pad, memory_key_padding_mask=pad,
        )  # (B, Tt, d)
        return self.out(h)  # (B, Tt, V)


def attnkit_layer(s: Sizes, norm_position: str) -> EncoderLayer:
    """An attnkit encoder layer with dropout where torch's has it."""
    spec = LayerSpec(
        s.d_model, s.n_heads, s.d_ff, dropout=DROPOUT, attention_dropout=DROPOUT, activation_dropout=DROPOUT,
        norm_position=norm_position,
    )
    return EncoderLayer(spec)


def torch_layer(s: Sizes, norm_position: str) -> nn.TransformerEncoderLayer:
    return nn.TransformerEncoderLayer(
        s.d_model, s.n_heads, s.d_ff, DROPOUT, batch_first=True, norm_first=norm_position == "pre"
    )


def attnkit_model(s: Sizes, norm_position: str, max_len: int) -> attnkit.Transformer:
    config = attnkit.TransformerConfig(
        src_vocab_size=s.vocab, tgt_vocab_size=s.vocab, d_model=s.d_model, n_heads=s.n_heads, d_ff=s.d_ff,
        n_encoder_layers=s.n_layers, n_decoder_layers=s.n_layers, dropout=DROPOUT, activation_dropout=DROPOUT,
        attention=AttentionConfig(dropout=DROPOUT), norm_position=norm_position, max_len=max_len,
        pad_id=PAD, bos_id=BOS, eos_id=2,
    )
    return attnkit.Transformer(config)


# -- weight copies: torch -> attnkit --------------------------------------------------------
# Each map takes ``get``, applied to every torch parameter before any slicing: the identity
# maps weights, ``lambda p: p.grad`` maps gradients (the correctness checks compare both).
Get = Callable[[Tensor], Tensor]


def _weights(p: Tensor) -> Tensor:
    return p


def _grads(p: Tensor) -> Tensor:
    return p.grad


def _linear(dst: str, src: nn.Module, get: Get) -> dict[str, Tensor]:
    return {f"{dst}.weight": get(src.weight), f"{dst}.bias": get(src.bias)}


def layer_map(ref: nn.Module, prefix: str = "", get: Get = _weights) -> dict[str, Tensor]:
    """attnkit ``EncoderLayer`` names -> tensors of a ``torch.nn.TransformerEncoderLayer``."""
    m = {
        "self_attn.qkv_proj.weight": get(ref.self_attn.in_proj_weight),
        "self_attn.qkv_proj.bias": get(ref.self_attn.in_proj_bias),
        **_linear("self_attn.out_proj", ref.self_attn.out_proj, get),
        **_linear("ffn.w1", ref.linear1, get),
        **_linear("ffn.w2", ref.linear2, get),
        **_linear("res_attn.norm", ref.norm1, get),
        **_linear("res_ffn.norm", ref.norm2, get),
    }
    return {prefix + k: v for k, v in m.items()}


def decoder_layer_map(ref: nn.TransformerDecoderLayer, prefix: str, d: int, get: Get = _weights) -> dict[str, Tensor]:
    """attnkit ``DecoderLayer`` names -> tensors of a ``torch.nn.TransformerDecoderLayer``."""
    cross = ref.multihead_attn
    m = {
        "self_attn.qkv_proj.weight": get(ref.self_attn.in_proj_weight),
        "self_attn.qkv_proj.bias": get(ref.self_attn.in_proj_bias),
        **_linear("self_attn.out_proj", ref.self_attn.out_proj, get),
        "cross_attn.q_proj.weight": get(cross.in_proj_weight)[:d],  # torch fuses q, k, v; attnkit q and (k, v)
        "cross_attn.q_proj.bias": get(cross.in_proj_bias)[:d],
        "cross_attn.kv_proj.weight": get(cross.in_proj_weight)[d:],
        "cross_attn.kv_proj.bias": get(cross.in_proj_bias)[d:],
        **_linear("cross_attn.out_proj", cross.out_proj, get),
        **_linear("ffn.w1", ref.linear1, get),
        **_linear("ffn.w2", ref.linear2, get),
        **_linear("res_self.norm", ref.norm1, get),
        **_linear("res_cross.norm", ref.norm2, get),
        **_linear("res_ffn.norm", ref.norm3, get),
    }
    return {prefix + k: v for k, v in m.items()}


def model_map(ref: TorchSeq2Seq, get: Get = _weights) -> dict[str, Tensor]:
    """attnkit ``Transformer`` parameter names -> tensors of :class:`TorchSeq2Seq`."""
    d = ref.embed.embedding_dim
    m: dict[str, Tensor] = {"src_embed.embedding.weight": get(ref.embed.weight)}  # shared with tgt_embed and lm_head
    for i, layer in enumerate(ref.core.encoder.layers):
        m.update(layer_map(layer, f"encoder.layers.{i}.", get))
    for i, layer in enumerate(ref.core.decoder.layers):
        m.update(decoder_layer_map(layer, f"decoder.layers.{i}.", d, get))
    if ref.core.encoder.norm is not None:
        m.update(_linear("encoder.norm", ref.core.encoder.norm, get))
        m.update(_linear("decoder.norm", ref.core.decoder.norm, get))
    return m


def copy_weights(ours: nn.Module, mapping: dict[str, Tensor]) -> None:
    """Copy ``mapping`` into ``ours``; every parameter must be covered once, with its shape."""
    params = dict(ours.named_parameters())  # tied parameters appear once
    missing, unused = sorted(set(params) - set(mapping)), sorted(set(mapping) - set(params))
    if missing or unused:
        raise AssertionError(f"weight map mismatch: missing {missing[:4]}, unused {unused[:4]}")
    with torch.no_grad():
        for name, src in mapping.items():
            if params[name].shape != src.shape:
                raise AssertionError(f"{name}: attnkit {tuple(params[name].shape)} vs torch {tuple(src.shape)}")
            params[name].copy_(src)


# -- correctness -------------------------------------------------------------------------------
def rel_err(a: Tensor, b: Tensor) -> float:
    """``||a - b|| / ||b||`` in float64."""
    a, b = a.detach().double(), b.detach().double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def compare_grads(ours: nn.Module, ref_grads: dict[str, Tensor]) -> tuple[float, str]:
    """Worst relative error between attnkit's parameter gradients and the mapped torch ones, and its name."""
    params = dict(ours.named_parameters())
    errs = {name: rel_err(params[name].grad, g) for name, g in ref_grads.items()}
    worst = max(errs, key=errs.__getitem__)
    return errs[worst], worst


def padded_lengths(batch: int, t: int, gen: torch.Generator) -> Tensor:
    """Random lengths in ``[3T/4, T]`` (at least 1), the first row full-length. ``(B,)``."""
    lengths = torch.randint(max(1, 3 * t // 4), t + 1, (batch,), generator=gen)
    lengths[0] = t
    return lengths


def check_layer(s: Sizes, norm_position: str, device: torch.device) -> dict[str, float]:
    """attnkit EncoderLayer == nn.TransformerEncoderLayer in eval mode, with and without padding.

    Outputs are compared in fp32 (with and without autograd: without, torch may take its
    fused inference path, which zeroes padded rows). Gradients are compared in float64:
    in fp32 a ReLU input within rounding of 0 can land on either side in the two models,
    and one such flip moves a bias gradient by ~1e-3 (seen on an H200).

    Returns the largest relative errors seen, by quantity.
    """
    torch.manual_seed(0)
    ref = torch_layer(s, norm_position).to(device).eval()
    ours = attnkit_layer(s, norm_position).to(device).eval()
    copy_weights(ours, layer_map(ref))
    gen = torch.Generator().manual_seed(1)
    b, t = 3, min(64, s.layer_shapes[0][1])
    x = torch.randn(b, t, s.d_model, generator=gen).to(device)  # (B, T, d_model)
    g = torch.randn(b, t, s.d_model, generator=gen).to(device)
    keep = (torch.arange(t)[None, :] < padded_lengths(b, t, gen)[:, None]).to(device)  # (B, T) True = token
    errs: dict[str, float] = {}

    def note(key: str, value: float) -> None:
        errs[key] = max(errs.get(key, 0.0), value)

    for masked in (False, True):
        kpm = ~keep if masked else None  # torch: True = padding
        mask = keep[:, None, None, :] if masked else None  # attnkit: (B, 1, 1, T), True = may attend
        rows = keep if masked else torch.ones_like(keep)
        with torch.no_grad():
            note("output_fp32_no_grad", rel_err(ours(x, mask)[0][rows], ref(x, src_key_padding_mask=kpm)[rows]))
        note("output_fp32", rel_err(ours(x, mask)[0], ref(x, src_key_padding_mask=kpm)))
    ref.double()
    ours.double()
    for masked in (False, True):
        kpm = ~keep if masked else None
        mask = keep[:, None, None, :] if masked else None
        xr, xo = x.double().requires_grad_(), x.double().requires_grad_()
        r = ref(xr, src_key_padding_mask=kpm)
        o, _ = ours(xo, mask)
        r.backward(g.double())
        o.backward(g.double())
        note("output_fp64", rel_err(o, r))
        note("grad_input_fp64", rel_err(xo.grad, xr.grad))
        note("grad_params_fp64", compare_grads(ours, layer_map(ref, get=_grads))[0])
        ref.zero_grad(set_to_none=True)
        ours.zero_grad(set_to_none=True)
    return errs


def make_batches(
    s: Sizes, batch: int, t: int, n: int, device: torch.device, seed: int, padded: bool = True
) -> list[tuple[Tensor, Tensor, Tensor]]:
    """``n`` ``(src, tgt_in, labels)`` batches, each ``(B, T)``, right-padded unless ``padded=False``.

    Pads are ignored by the loss.
    """
    gen = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        src_len = padded_lengths(batch, t, gen) if padded else torch.full((batch,), t)
        tgt_len = padded_lengths(batch, t, gen) if padded else torch.full((batch,), t)
        src = torch.randint(3, s.vocab, (batch, t), generator=gen)
        src = src.masked_fill(torch.arange(t)[None, :] >= src_len[:, None], PAD)
        tgt = torch.randint(3, s.vocab, (batch, t + 1), generator=gen)
        tgt[:, 0] = BOS
        tgt = tgt.masked_fill(torch.arange(t + 1)[None, :] > tgt_len[:, None], PAD)
        out.append((src.to(device), tgt[:, :-1].contiguous().to(device), tgt[:, 1:].contiguous().to(device)))
    return out


def seq2seq_loss(logits: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), ignore_index=PAD, label_smoothing=LABEL_SMOOTHING
    )


def check_model(s: Sizes, norm_position: str, device: torch.device) -> dict[str, float]:
    """attnkit.Transformer == the nn.Transformer model on padded batches, eval mode.

    Logits and loss in fp32 (with and without autograd), gradients in float64 (see
    :func:`check_layer`). Returns the relative errors by quantity.
    """
    torch.manual_seed(0)
    t = min(64, s.model_shapes[0][1])
    ref = TorchSeq2Seq(s, norm_position, max_len=t).to(device).eval()
    ours = attnkit_model(s, norm_position, max_len=t).to(device).eval()
    copy_weights(ours, model_map(ref))
    if ours.num_parameters() != sum(p.numel() for p in ref.parameters()):
        raise AssertionError("attnkit and torch models differ in parameter count")
    src, tgt_in, labels = make_batches(s, 3, t, 1, device, seed=2)[0]
    errs: dict[str, float] = {}
    with torch.no_grad():
        errs["logits_fp32_no_grad"] = rel_err(ours(src, tgt_in).logits, ref(src, tgt_in))
        r_logits, o_logits = ref(src, tgt_in), ours(src, tgt_in).logits
    errs["loss_fp32"] = abs(seq2seq_loss(o_logits, labels).item() / seq2seq_loss(r_logits, labels).item() - 1.0)
    r_logits, o_logits = ref(src, tgt_in), ours(src, tgt_in).logits
    errs["logits_fp32"] = rel_err(o_logits, r_logits)
    del r_logits, o_logits
    ref.double()
    ours.double()
    r_logits, o_logits = ref(src, tgt_in), ours(src, tgt_in).logits
    errs["logits_fp64"] = rel_err(o_logits, r_logits)
    seq2seq_loss(r_logits, labels).backward()
    seq2seq_loss(o_logits, labels).backward()
    errs["grad_params_fp64"], worst = compare_grads(ours, model_map(ref, get=_grads))
    print(f"  seq2seq {norm_position}: largest fp64 gradient error in {worst}")
    return errs


def run_checks(s: Sizes, device: torch.device) -> dict[str, dict[str, float]]:
    results = {}
    for norm in ("post", "pre"):
        results[f"encoder_layer_{norm}"] = check_layer(s, norm, device)
        results[f"seq2seq_{norm}"] = check_model(s, norm, device)
    for name, errs in results.items():
        worst = max(errs.values())
        print(f"check {name:20s} max rel err {worst:.2e}  ({', '.join(f'{k}={v:.1e}' for k, v in errs.items())})")
        if not worst < CHECK_TOLERANCE:  # also catches NaN
            raise SystemExit(f"error: correctness check {name} failed: {errs} (tolerance {CHECK_TOLERANCE})")
    return results


# -- timed steps ---------------------------------------------------------------------------
def layer_flops(s: Sizes, b: int, t: int) -> float:
    """Matrix-multiply FLOPs of one encoder layer, forward + backward (3x forward)."""
    n, d = b * t, s.d_model
    fwd = 2 * n * (4 * d * d + 2 * d * s.d_ff) + 4 * b * t * t * d
    return 3.0 * fwd


def model_flops(s: Sizes, b: int, t: int) -> float:
    """Matrix-multiply FLOPs of one training step (source and target length ``t``; causal attention counted half)."""
    n, d = b * t, s.d_model
    enc = 2 * n * (4 * d * d + 2 * d * s.d_ff) + 4 * b * t * t * d
    dec = 2 * n * (8 * d * d + 2 * d * s.d_ff) + 2 * b * t * t * d + 4 * b * t * t * d
    head = 2 * n * d * s.vocab
    return 3.0 * (s.n_layers * (enc + dec) + head)


def layer_step(layer: nn.Module, call: Callable[[nn.Module, Tensor], Tensor], xs: list[Tensor], g: Tensor, device: torch.device) -> common.Step:
    def step(i: int) -> None:
        x = xs[i % len(xs)]
        with torch.autocast(device.type, dtype=torch.bfloat16):
            out = call(layer, x)  # (B, T, d_model)
        out.backward(g.to(out.dtype))
        layer.zero_grad(set_to_none=True)
        x.grad = None

    return step


def model_step(
    model: nn.Module, logits_of: Callable[[Tensor, Tensor], Tensor], batches: list, device: torch.device
) -> common.Step:
    opt = build_optimizer(model, "adamw", 1e-4, (0.9, 0.98), 1e-9, 0.01)  # fused on CUDA, foreach on the CPU

    def step(i: int) -> None:
        src, tgt_in, labels = batches[i % len(batches)]
        with torch.autocast(device.type, dtype=torch.bfloat16):
            loss = seq2seq_loss(logits_of(src, tgt_in), labels)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    return step


def layer_case(s: Sizes, norm: str, b: int, t: int, device: torch.device) -> tuple[dict[str, Any], dict[str, common.Step]]:
    torch.manual_seed(0)
    ref = torch_layer(s, norm).to(device).train()
    ours = attnkit_layer(s, norm).to(device).train()
    copy_weights(ours, layer_map(ref))
    gen = torch.Generator().manual_seed(3)
    xs = [torch.randn(b, t, s.d_model, generator=gen).to(device).requires_grad_() for _ in range(3)]
    g = torch.randn(b, t, s.d_model, generator=gen).to(device)
    steps = {
        "attnkit": layer_step(ours, lambda m, x: m(x)[0], xs, g, device),
        "torch": layer_step(ref, lambda m, x: m(x), xs, g, device),
    }
    meta = {"kind": "encoder_layer_fwd_bwd", "flops_per_step": layer_flops(s, b, t)}
    return meta, steps


def model_case(
    s: Sizes, norm: str, b: int, t: int, device: torch.device, padded: bool = True
) -> tuple[dict[str, Any], dict[str, common.Step]]:
    """A training step of both models. Unpadded batches: torch skips its padding masks (its
    best path), attnkit runs as a user would run it; a third, diagnostic implementation is
    attnkit with the source mask forced off, to price attnkit's always-on padding mask.
    """
    torch.manual_seed(0)
    ref = TorchSeq2Seq(s, norm, max_len=t).to(device).train()
    ours = attnkit_model(s, norm, max_len=t).to(device).train()
    copy_weights(ours, model_map(ref))
    batches = make_batches(s, b, t, 3, device, seed=4, padded=padded)
    steps = {
        "attnkit": model_step(ours, lambda src, tgt: ours(src, tgt).logits, batches, device),
        "torch": model_step(ref, lambda src, tgt: ref(src, tgt, padding_mask=padded), batches, device),
    }
    if not padded:
        bare = attnkit_model(s, norm, max_len=t).to(device).train()
        copy_weights(bare, model_map(ref))
        bare.source_mask = lambda src: None  # diagnostic only: right because these batches have no padding
        steps["attnkit_no_source_mask"] = model_step(bare, lambda src, tgt: bare(src, tgt).logits, batches, device)
    real = sum(int((lab != PAD).sum()) for _, _, lab in batches) / len(batches)
    meta = {
        "kind": "seq2seq_train_step",
        "flops_per_step": model_flops(s, b, t),
        "parameters": ours.num_parameters(),
        "non_pad_target_tokens_per_step": real,
    }
    return meta, steps


def run_case(
    name: str, build: Callable[[], tuple[dict[str, Any], dict[str, common.Step]]], b: int, t: int,
    s: Sizes, device: torch.device, profile: bool,
) -> dict[str, Any]:
    print(f"case {name} ...", flush=True)
    try:
        meta, steps = build()
        timings = common.time_interleaved(steps, device, warmup=s.warmup, iters=s.iters, rounds=s.rounds)
        result: dict[str, Any] = {"name": name, "batch": b, "seq": t, "tokens_per_step": b * t, **meta}
        for impl, step in steps.items():
            tm = timings[impl]
            peak = common.step_peak_memory(step, device)
            result[impl] = {
                **tm.to_dict(),
                "peak_step_bytes": peak,
                "tokens_per_s": b * t / (tm.median_ms / 1e3),
                "tflops": meta["flops_per_step"] / (tm.median_ms / 1e3) / 1e12,
            }
            if profile:
                try:
                    result[impl]["profile"] = common.profile_top(step, device, steps=3 if device.type == "cuda" else 1)
                except Exception as e:  # a profiler failure must not lose the timings
                    result[impl]["profile_error"] = f"{type(e).__name__}: {e}"
        result["ratio"] = result["torch"]["median_ms"] / result["attnkit"]["median_ms"]
    except torch.cuda.OutOfMemoryError as e:
        print(f"case {name} skipped: out of memory ({str(e).splitlines()[0]})")
        result = {"name": name, "batch": b, "seq": t, "skipped": "out of memory"}
    except Exception as e:  # record and go on: the other cases still count; main() exits non-zero
        print(f"case {name} failed: {type(e).__name__}: {e}")
        result = {"name": name, "batch": b, "seq": t, "skipped": "error", "error": f"{type(e).__name__}: {e}"}
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return result


# -- report -------------------------------------------------------------------------------
def mib(n: int | None) -> str:
    return "-" if n is None else f"{n / 2**20:,.0f}"


def summary(cases: list[dict[str, Any]]) -> str:
    header = ["case", "attnkit ms", "torch ms", "ratio", "attnkit peak MiB", "torch peak MiB", "attnkit tok/s", "torch tok/s"]
    rows = []
    for c in cases:
        if "skipped" in c:
            rows.append([c["name"], c["skipped"], "", "", "", "", "", ""])
            continue
        a, t = c["attnkit"], c["torch"]
        rows.append([
            c["name"], f"{a['median_ms']:.2f}", f"{t['median_ms']:.2f}", f"{c['ratio']:.2f}",
            mib(a["peak_step_bytes"]), mib(t["peak_step_bytes"]), f"{a['tokens_per_s']:,.0f}", f"{t['tokens_per_s']:,.0f}",
        ])
    return common.markdown_table(header, rows)


def profile_hints(cases: list[dict[str, Any]]) -> str:
    """Top kernels of both implementations, for each case where attnkit is slower beyond the noise."""
    lines = []
    for c in cases:
        for extra in [k for k in c if k.startswith("attnkit_")]:
            e = c[extra]
            lines.append(
                f"\n{c['name']}: diagnostic {extra} {e['median_ms']:.2f} ms "
                f"(attnkit {c['attnkit']['median_ms']:.2f}, torch {c['torch']['median_ms']:.2f})"
            )
        if "skipped" in c or "profile" not in c["attnkit"]:
            continue
        a, t = c["attnkit"], c["torch"]
        noise = max(a["spread_ms"], t["spread_ms"])
        if a["median_ms"] - t["median_ms"] <= noise:
            continue
        lines.append(f"\n{c['name']}: attnkit {a['median_ms']:.2f} ms vs torch {t['median_ms']:.2f} ms (noise {noise:.2f} ms)")
        for impl in ("attnkit", "torch"):
            p = c[impl]["profile"]
            busy, reads = p["busy_ms_per_step"], p.get("host_reads_per_step", 0)
            lines.append(
                f"  {impl}: GPU busy {busy:.2f} ms of {c[impl]['median_ms']:.2f} ms per step; "
                f"{reads:.0f} blocking host reads (.item()/int()) per step"
            )
            for k in p["top"][:6]:
                lines.append(f"    {k['ms_per_step']:7.3f} ms  x{k['calls_per_step']:<5.0f} {k['name'][:90]}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny sizes and few steps: a smoke test, also on CPU")
    ap.add_argument("--device", default=None, help="cuda, cuda:N or cpu (default: cuda when present)")
    ap.add_argument("--out-dir", type=Path, default=None, help="where the JSON goes (default benchmarks/results)")
    ap.add_argument("--no-profile", action="store_true", help="skip the per-case kernel profiles")
    args = ap.parse_args(argv)

    device = common.pick_device(args.device)
    s = QUICK if args.quick else FULL
    if args.quick and device.type == "cpu":
        torch.set_num_threads(1)  # tiny matrices: threads only add contention on a shared CPU
    env = common.environment(device)
    print(f"device {env['device_name']} | torch {env['torch']} | cuda {env['cuda']} | attnkit {env['attnkit']['commit'][:12]}")
    checks = run_checks(s, device)

    cases = []
    for norm in ("post", "pre"):
        for b, t in s.layer_shapes:
            name = f"encoder layer fwd+bwd, {norm}-norm, B={b} T={t}"
            cases.append(run_case(name, lambda: layer_case(s, norm, b, t, device), b, t, s, device, not args.no_profile))
    for norm in ("post", "pre"):
        shapes = s.model_shapes if norm == "post" else s.model_shapes[:1]
        for b, t in shapes:
            name = f"seq2seq train step, {norm}-norm, B={b} T={t}"
            cases.append(run_case(name, lambda: model_case(s, norm, b, t, device), b, t, s, device, not args.no_profile))
    b, t = s.model_shapes[0]
    name = f"seq2seq train step, post-norm, B={b} T={t}, unpadded"
    cases.append(run_case(name, lambda: model_case(s, "post", b, t, device, padded=False), b, t, s, device, not args.no_profile))

    table = summary(cases)
    payload = {
        "benchmark": "core",
        "quick": args.quick,
        "environment": env,
        "settings": {
            "sizes": s.__dict__,
            "dtype": "bf16 autocast, fp32 weights",
            "dropout": DROPOUT,
            "label_smoothing": LABEL_SMOOTHING,
            "optimizer": "AdamW(lr=1e-4, betas=(0.9, 0.98), eps=1e-9, weight_decay=0.01, fused on CUDA)",
            "tokens_per_step": "batch x seq (target positions for seq2seq, padding included)",
            "peak_step_bytes": "max_memory_allocated during one step minus memory allocated at its start",
            "ratio": "torch median ms / attnkit median ms",
        },
        "checks": checks,
        "cases": cases,
        "table": table,
    }
    path = common.write_json("core", payload, args.out_dir, suffix="-quick" if args.quick else "")
    hints = profile_hints(cases)
    if hints:
        print("\nDiagnostics, and top kernels per step where attnkit is slower than torch beyond noise:" + hints)
    print(f"\nwrote {path}\n")
    print(table)
    return 1 if any(c.get("skipped") == "error" for c in cases) else 0


if __name__ == "__main__":
    raise SystemExit(main())

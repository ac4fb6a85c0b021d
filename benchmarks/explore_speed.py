"""Diagnostic, not a benchmark: where do the GPT-2 decode step and the Multi30k training step spend time?

    PYTHONPATH=. python benchmarks/explore_speed.py decode translate     # one GPU; log in benchmarks/results/logs/

Decode: the compiled one-token step of GPT-2 124M (bf16, batch 1) under variants of the
``scaled_dot`` fast path swapped in by monkeypatching (as shipped; without the empty-row guard;
explicit matmul + softmax) and of inductor settings (coordinate-descent tuning); for each,
tokens/s of a 512-token loop, agreement of the first 64 greedy tokens with eager decoding, and
the kernels of 20 steps from torch.profiler. Translate: ``benchmarks/translate.py``'s
attnkit / torch.nn.Transformer step timing with the same swaps, and with both models' forward
under ``torch.compile`` (automatic dynamic shapes). The "compiled" row of the committed log is
not a fair comparison: the twin's length-keyed causal-mask cache made it recompile per target
length until the recompile limit, after which it ran eager (``translate.py --speed-only`` fixes
this with ``dynamic=True`` and no cache).
"""
import sys, time, json, dataclasses, os
sys.path.insert(0, ".")
import torch
import torch._dynamo
from benchmarks import gpt as gb
from benchmarks import translate as tb
from attnkit.attention import scaled_dot as sd
from attnkit.generation import sampling as smp

dev = torch.device("cuda" if torch.cuda.is_available() else "cpu")
QUICK = dev.type == "cpu"
what = sys.argv[1:] or ["decode", "translate"]
ORIG_FAST = sd.ScaledDotProduct.fast

def fast_noguard(self, q, k, v, mask, bias, causal):
    import torch.nn.functional as F
    from attnkit.attention.masks import combine
    tq, tk = q.shape[-2], k.shape[-2]
    p = self.dropout if self.training else 0.0
    scale = self._scale(q.shape[-1])
    if causal and tq == 1:
        causal = False
    if mask is None and bias is None and (not causal or tq == tk):
        return F.scaled_dot_product_attention(q, k, v, dropout_p=p, is_causal=causal, scale=scale)
    allowed = combine(mask, causal, tq, tk, q.device)
    am = torch.zeros(allowed.shape, dtype=q.dtype, device=q.device).masked_fill_(~allowed, float("-inf"))
    return F.scaled_dot_product_attention(q, k, v, attn_mask=am, dropout_p=p, scale=scale)

def fast_math(self, q, k, v, mask, bias, causal):
    # explicit matmul + masked softmax: lets inductor fuse mask and softmax
    tq = q.shape[-2]
    if causal and tq == 1:
        causal = False
    s = torch.matmul(q, k.transpose(-2, -1)) * self._scale(q.shape[-1])
    if mask is not None:
        s = s.masked_fill(~mask, float("-inf"))
    w = torch.softmax(s.float(), dim=-1).to(q.dtype)
    return torch.matmul(w, v)

def decode_variant(name, fast=None, mode="reduce-overhead", inductor=None, new=512):
    torch._dynamo.reset()
    smp._COMPILED.clear(); smp._REUSED.clear()
    sd.ScaledDotProduct.fast = fast or ORIG_FAST
    saved = {}
    import torch._inductor.config as ic
    for k, v in (inductor or {}).items():
        saved[k] = getattr(ic, k); setattr(ic, k, v)
    fn = torch.compile(smp.decode_one_token, mode=mode, fullgraph=True)
    smp._COMPILED.append(fn)
    t0 = time.perf_counter()
    try:
        r = gb.decode_loop(ours, prompt, new, 3)
        res = {"tok_s": r["tokens_per_s"], "compile_and_run_s": time.perf_counter() - t0}
        # tokens equal to reference?
        caches = smp.reused_static_caches(ours, 1, 576)
        with torch.no_grad():
            pad = torch.zeros(1, dtype=torch.long, device=dev)
            tok = smp.prefill(ours, prompt, pad, caches).argmax(-1, keepdim=True)
            toks = [tok]
            slots = torch.arange(16, 16 + 64, device=dev)
            for i in range(63):
                tok = fn(ours, tok, slots[i:i+1], pad, caches).argmax(-1, keepdim=True); toks.append(tok)
            res["first64_equal_ref"] = int((torch.cat(toks, 1)[0].cpu() == ref[:64]).sum())
        # kernel profile of 20 steps
        from torch.profiler import profile, ProfilerActivity
        from torch.autograd import DeviceType
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
            with torch.no_grad():
                for i in range(20):
                    tok = fn(ours, tok, slots[i:i+1], pad, caches).argmax(-1, keepdim=True)
            torch.cuda.synchronize()
        ev = [e for e in prof.key_averages() if e.device_type == DeviceType.CUDA]
        ev.sort(key=lambda e: e.self_device_time_total, reverse=True)
        res["kernels_per_step"] = sum(e.count for e in ev) / 20
        res["busy_us_per_step"] = sum(e.self_device_time_total for e in ev) / 20
        res["top"] = [(e.key[:90], round(e.self_device_time_total / 20, 1), e.count / 20) for e in ev[:14]]
    except Exception as e:
        res = {"error": repr(e)[:500]}
    for k, v in saved.items():
        setattr(ic, k, v)
    sd.ScaledDotProduct.fast = ORIG_FAST
    print(name, json.dumps(res, indent=1), flush=True)
    return res

out = {}
if "decode" in what:
    hf, ours, info = gb.build_pair("gpt2", dev, torch.bfloat16)
    del hf
    g = torch.Generator().manual_seed(2)
    prompt = torch.randint(0, 50257, (1, 16), generator=g).to(dev)
    # reference tokens: eager
    with torch.no_grad():
        from attnkit.generation import generate, SamplingConfig
        ref = torch.tensor(generate(ours, [prompt[0].tolist()], SamplingConfig(max_new_tokens=64, temperature=0)).tokens[0])
    out["decode"] = {
        "base": decode_variant("base"),
        "noguard": decode_variant("noguard", fast_noguard),
        "math": decode_variant("math", fast_math),
        "cdt": decode_variant("coordinate_descent", inductor={"coordinate_descent_tuning": True}),
    }
    torch._dynamo.reset(); smp._COMPILED.clear(); smp._REUSED.clear()
    del ours
    torch.cuda.empty_cache()

if "translate" in what:
    cfgs = tb.RECIPE
    for label, fast, comp in (("eager", None, False), ("eager-noguard", fast_noguard, False), ("compiled", None, True)):
        sd.ScaledDotProduct.fast = fast or ORIG_FAST
        torch._dynamo.reset()
        t0 = time.perf_counter()
        try:
            if comp:
                real_step = tb.train_step_fn
                def compiled_step_fn(model, logits_of, *a, **k):
                    model.forward = torch.compile(model.forward)
                    return real_step(model, logits_of, *a, **k)
                tb.train_step_fn = compiled_step_fn
            r = tb.training_speed((tb.QUICK if QUICK else tb.RECIPE)["model"], dataclasses.replace(cfgs["data"], data=".data/multi30k"), dev, QUICK)
            res = {k: (v["tokens_per_s"], v["median_ms"]) for k, v in r["results"].items()}
            res["ratio"] = r["ratio_attnkit_over_torch"]
        except Exception as e:
            import traceback; traceback.print_exc()
            res = {"error": repr(e)[:500]}
        finally:
            if comp:
                tb.train_step_fn = real_step
        res["wall_s"] = time.perf_counter() - t0
        sd.ScaledDotProduct.fast = ORIG_FAST
        print("translate", label, json.dumps(res), flush=True)
        out["translate-" + label] = res

json.dump(out, open(os.environ.get("OUT", "/tmp") + "/explore.json", "w"), indent=1, default=str)

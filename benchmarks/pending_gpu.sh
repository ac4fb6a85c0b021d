#!/bin/bash
# The GPU measurements that are still waiting, in two calls of at most 10 minutes each on one
# H100/H200 (run from the repository root; attnkit need not be installed). Each step has its own
# time limit, so a slow step cannot take the others' results; the most needed step comes first.
#
#   OUT=/some/dir bash benchmarks/pending_gpu.sh A DATA_DIR MINILM_DIR   # then B
#
# DATA_DIR holds multi30k/ and sst2/ (copies of ../shared/data); MINILM_DIR the
# all-MiniLM-L6-v2 tokenizer files (tokenizer.json, vocab.txt; the weights are not needed here).
# Everything printed goes to $OUT/pending.log; each benchmark writes its JSON into $OUT (few
# files: the device tool returns about ten). Quote option values that start with "-"
# (--suffix=-x): argparse reads "--suffix -x" as two options.
PART=${1:?A, B, C, D, E, F, G, H, I, J, K, L, M, N, O, P (runs O too), Q, R, S or T}; DATA=${2:?data dir}; MINILM=${3:?all-MiniLM-L6-v2 dir}; OUT=${OUT:?set OUT}
export PYTHONPATH=. PYTHONUNBUFFERED=1
S=$(date +%s)
step() {  # seconds, description, command...
  local limit=$1 what=$2; shift 2
  echo "== $what (limit ${limit}s, at $(( $(date +%s) - S ))s)"
  timeout "$limit" "$@" 2>&1 | grep -v "Warning\|^W1\|warnings.warn\|AUTOTUNE\|triton_flex\|strides:\|dtypes:\|Autotune Choices\|num_choices\|SingleProcess" | tail -40
  echo "-- rc=${PIPESTATUS[0]}"
}
{
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if [ "$PART" = G ] && ! [ -f /root/minilm/part_aa ]; then
  echo "G: the first half of the weights is not on this machine (a fresh one): part E instead"; PART=E
fi
if [ "$PART" = A ]; then
# issue 6: why linear costs ~1.2 ms at 1-4k and lsh ~7 ms at 4-16k whatever the length (tables to a file)
step 150 "profile" python benchmarks/profile_attention.py --out "$OUT/profile-attention.md" \
  --rows linear:1024 linear:4096 lsh:4096 lsh:16384 bigbird:4096 bigbird@t64:4096 dense:4096
# issue 5: SST-2 epoch wall, attnkit's bucketed batches (timed first) against HF with dynamic padding
step 240 "bert epoch" python benchmarks/bert_speed.py --data "$DATA" --tokenizer "$MINILM" --parts epoch --results "$OUT"
# issue 3: attnkit / torch.nn.Transformer twin, eager and both compiled with dynamic=True
step 190 "translate speed" python benchmarks/translate.py --speed-only --data "$DATA/multi30k" --out-dir "$OUT"
elif [ "$PART" = B ]; then
# issue 6: the targets' rows after LSH's bf16 products and inverse-gather sorts, and 64 x 64 BigBird tiles
step 170 "attention targets" python benchmarks/attention.py --suffix=-targets3 --out-dir "$OUT" --rows \
  dense:4096 bigbird:4096 bigbird@t64:4096 lsh:4096 linear:4096 dense:16384 lsh:16384 linear:16384 \
  dense:32768 lsh:32768 dense:65536 lsh:65536
# issue 5: SST-2 epoch wall, batches copied through pinned memory (attnkit compiled first)
step 270 "bert epoch" python benchmarks/bert_speed.py --data "$DATA" --tokenizer "$MINILM" --parts epoch --results "$OUT" \
  --epoch-modes "attnkit compiled (dynamic),hf eager,attnkit eager"
# the LSH GPU tests: compiled and FlexAttention paths against eager, with gradients
step 110 "lsh gpu tests" python -m pytest -q -p no:cacheprovider -m gpu tests/attention/test_lsh_flex.py
fi
if [ "$PART" = C ]; then
# issue 5: what a new length costs SDPA with and without cuDNN attention, then the epoch with cuDNN SDPA off
step 60 "sdpa shapes" python benchmarks/sdpa_shapes.py --out "$OUT/sdpa-shapes.json"
step 330 "bert epoch" python benchmarks/bert_speed.py --data "$DATA" --tokenizer "$MINILM" --parts epoch --results "$OUT" \
  --epoch-modes "attnkit compiled (dynamic, no cuDNN SDPA);hf eager;hf eager (no cuDNN SDPA);attnkit eager (no cuDNN SDPA)"
# issue 6: LSH at 32k and 64k (cut from B)
step 100 "lsh long rows" python benchmarks/attention.py --suffix=-targets3b --out-dir "$OUT" --rows dense:32768 lsh:32768 dense:65536 lsh:65536
fi
if [ "$PART" = D ]; then
# the LSH GPU tests (compiled chunked path with the inverse-gather sorts, with gradients) and the Trainer's cuDNN switch
step 170 "gpu tests" python -m pytest -q -p no:cacheprovider -m gpu tests/attention/test_lsh_flex.py tests/test_gpu.py
# issue 5: the epoch with CUDA graphs, and Hugging Face without cuDNN attention (like for like)
step 260 "bert epoch" python benchmarks/bert_speed.py --data "$DATA" --tokenizer "$MINILM" --parts epoch --results "$OUT" \
  --epoch-modes "attnkit compiled (dynamic, CUDA graphs, no cuDNN SDPA);hf eager (no cuDNN SDPA)"
step 60 "lsh 64k" python benchmarks/attention.py --suffix=-targets3c --out-dir "$OUT" --rows lsh:65536
fi
if [ "$PART" = E ]; then
# session 6. issue 3: the full Multi30k run (its twin ratio now with the shared source bias),
# the shared source bias against a mask per layer, then the compiled twin alone (on 6 batches
# since session 5: the twin compiles once per target length; 250 s was not enough for 24)
step 200 "translate run" python benchmarks/translate.py --data "$DATA/multi30k" --minutes 2.5 --out-dir "$OUT"
step 60 "source bias" python benchmarks/source_bias.py --out-dir "$OUT"
step 300 "translate compiled twin" python benchmarks/translate.py --speed-only --speed-modes compiled --data "$DATA/multi30k" --out-dir "$OUT"
fi
if [ "$PART" = F ]; then
# session 6, call 1 of 2. Keep the first half of the all-MiniLM-L6-v2 weights for call G (carried as .minilm_a)
mkdir -p /root/minilm && cp ../.minilm_a/* /root/minilm/ 2>/dev/null; ls -la /root/minilm
# issue 4: decoding with the pre-norm LayerNorms folded into the one-row products, against HF static
step 220 "gpt decode" python benchmarks/gpt.py decode --repeats 3 --out-dir "$OUT"
# the GPU tests of compiled decoding (tests/test_gpu.py) and of the generation package
step 90 "gpu tests" python -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py tests/generation
# issue 5: the HF compiled epoch, for the last like-for-like row (needs only the tokenizer)
step 200 "bert epoch, HF compiled" python benchmarks/bert_speed.py --data "$DATA" --tokenizer "$MINILM" --parts epoch \
  --results "$OUT" --hf-compiled-epoch --epoch-modes "hf compiled (dynamic)"
fi
if [ "$PART" = G ]; then
# session 6, call 2 of 2: the second half of the weights, then fine-tuning sweep 4 (all runs at once on the GPU)
if [ -f /root/minilm/part_aa ] && [ -f ../.minilm_b/part_ab ]; then
  cp -r "$MINILM"/* /root/minilm/ && cat /root/minilm/part_aa ../.minilm_b/part_ab > /root/minilm/model.safetensors
  echo "sha256 $(sha256sum /root/minilm/model.safetensors | cut -c1-16) (want $WANT_SHA)"
  mkdir -p /tmp/sw
  step 520 "finetune sweep ${SWEEP_PLAN:-4}" bash benchmarks/finetune_sweep.sh "$DATA" /root/minilm /tmp/sw 510 "${SWEEP_PLAN:-4}"
  python benchmarks/finetune_summary.py /tmp/sw > "$OUT/sweep-summary.md"; cat "$OUT/sweep-summary.md"
  tar -czf "$OUT/sweep.tgz" -C /tmp/sw .
fi
fi
if [ "$PART" = I ]; then
# session 6, after F's steps all ran past their limits: decoding alone (three one-row rows, each
# compiled afresh: about 5 minutes), then the GPU tests of compiled decoding
step 420 "gpt decode" python benchmarks/gpt.py decode --repeats 3 --out-dir "$OUT"
step 150 "gpu tests" python -m pytest -q -p no:cacheprovider -m gpu tests/test_gpu.py
fi
if [ "$PART" = R ]; then
# session 7: the twin ratio before (OLD, a checkout of 4b12244) and after the packed-gradient head
# split and the recipe's memory-efficient attention pin; "after, unpinned" separates the two
OLD=$(realpath "${OLD:?set OLD to the older checkout}"); D=$(realpath "$DATA/multi30k")
step 60 "gpu tests" python -m pytest -q -p no:cacheprovider tests/attention/test_heads.py tests/attention/test_sdpa_backend.py
T="python benchmarks/translate.py --speed-only --speed-modes eager --data $D --out-dir $OUT"
for i in 1 2; do
  step 80 "translate speed, before ($i)" bash -c "cd $OLD && ATTNKIT_COMMIT=$OLD_COMMIT $T --tag session7-before$i"
  step 80 "translate speed, after ($i)" $T --tag session7-after$i
done
step 80 "translate speed, after, unpinned" $T --tag session7-after-unpinned --set "model.attention.params={}"
step 80 "translate speed, before, cuDNN off" bash -c "cd $OLD && ATTNKIT_COMMIT=$OLD_COMMIT $T --tag session7-before-nocudnn --no-cudnn-attention"
step 80 "translate speed, after, cuDNN off" $T --tag session7-after-nocudnn --no-cudnn-attention
fi
if [ "$PART" = S ]; then
# session 8, call 1 of 2: keep the first half of the all-MiniLM-L6-v2 weights for call G
# (SWEEP_PLAN=7); meanwhile every GPU test (CUDA-graphed training steps are new)
mkdir -p /root/minilm && cp ../.minilm_a/* /root/minilm/ 2>/dev/null; ls -la /root/minilm
step 540 "gpu tests" python -m pytest -q -p no:cacheprovider -m gpu tests/
fi
if [ "$PART" = T ]; then
# session 9, call 1 of 2: keep the first half of the all-MiniLM-L6-v2 weights for call G
# (SWEEP_PLAN=8); meanwhile the GPU tests of training and the command line
mkdir -p /root/minilm && cp ../.minilm_a/* /root/minilm/ 2>/dev/null; ls -la /root/minilm
step 300 "gpu tests" python -m pytest -q -p no:cacheprovider -m gpu tests/training tests/cli tests/test_gpu.py
fi
if [ "$PART" = Q ]; then
# session 7, call 1 of 2: keep the first half of the all-MiniLM-L6-v2 weights for call G
# (SWEEP_PLAN=6); meanwhile the twin comparison with cuDNN attention off for both models, as the
# Trainer runs varying-length tasks, twice
mkdir -p /root/minilm && cp ../.minilm_a/* /root/minilm/ 2>/dev/null; ls -la /root/minilm
for i in 1 2; do
  step 110 "translate speed, cuDNN attention off ($i)" python benchmarks/translate.py --speed-only --speed-modes eager \
    --data "$DATA/multi30k" --out-dir "$OUT" --tag nocudnn$i --no-cudnn-attention
done
fi
if [ "$PART" = P ]; then
# session 7: where the twin comparison's step time goes, per model: mean step, host dispatch
# (GPU idle at the start), summed kernel time and the top kernels (translate.py prints them)
step 150 "translate speed, profiled" python benchmarks/translate.py --speed-only --speed-modes eager --data "$DATA/multi30k" --out-dir "$OUT" --tag profile
fi
if [ "$PART" = O ] || [ "$PART" = P ]; then
# next session: decoding host time before and after the stacked beam-search caches (KVStack,
# session 6, measured on the CPU only), alternating; OLD a checkout of the commit before it
OLD=$(realpath "${OLD:?set OLD to the older checkout}"); cp benchmarks/seq2seq_decode.py "$OLD/benchmarks/"
for i in 1 2; do
  step 100 "seq2seq decode, before ($i)" bash -c "cd $OLD && ATTNKIT_COMMIT=$OLD_COMMIT python benchmarks/seq2seq_decode.py --out-dir $OUT --tag stack-before$i"
  step 100 "seq2seq decode, after ($i)" python benchmarks/seq2seq_decode.py --out-dir "$OUT" --tag stack-after$i
done
fi
if [ "$PART" = N ]; then
# session 6, last: the twin ratio with the step function dividing gradients as the Trainer does
# (one multi-tensor division instead of one per parameter), twice
for i in 1 2; do
  step 120 "translate speed ($i)" python benchmarks/translate.py --speed-only --speed-modes eager --data "$DATA/multi30k" --out-dir "$OUT" --tag foreach$i
done
fi
if [ "$PART" = M ]; then
# session 6: decoding host time before and after the shared source bias in decoding and dropout
# skipped in eval (OLD: a checkout of the commit before, OLD_COMMIT its name), alternating
OLD=$(realpath "${OLD:?set OLD to the older checkout}"); cp benchmarks/seq2seq_decode.py "$OLD/benchmarks/"
for i in 1 2; do
  step 100 "seq2seq decode, before ($i)" bash -c "cd $OLD && ATTNKIT_COMMIT=$OLD_COMMIT python benchmarks/seq2seq_decode.py --out-dir $OUT --tag before$i"
  step 100 "seq2seq decode, after ($i)" python benchmarks/seq2seq_decode.py --out-dir "$OUT" --tag after$i
done
fi
if [ "$PART" = L ]; then
# session 6: the twin ratio before and after the packed head split (commit 1765ad9), alternating
# in one call; OLD is a checkout of the commit before it (the twin's code is the same in both)
D=$(realpath "$DATA/multi30k"); OLD=$(realpath "${OLD:?set OLD to the older checkout}")
for i in 1 2; do
  step 120 "translate speed, before ($i)" bash -c "cd $OLD && python benchmarks/translate.py --speed-only --speed-modes eager --data $D --out-dir $OUT --tag before$i"
  step 120 "translate speed, after ($i)" python benchmarks/translate.py --speed-only --speed-modes eager --data "$D" --out-dir "$OUT" --tag after$i
done
fi
if [ "$PART" = K ]; then
# session 6: folded-norm decoding a third time, and with SDPA's memory-efficient kernel instead
# of cuDNN's for the one-query attention (J's one-KV-buffer candidate was slower: removed)
step 560 "gpt decode, folded rows" python benchmarks/gpt.py decode --repeats 5 --out-dir "$OUT" --tag folded-b \
  --only "folded" "static cache"
fi
if [ "$PART" = J ]; then
# session 6: the folded-norm decoding again (a second measurement of I's 3.01x) and a candidate:
# keys and values in one cache buffer, one write per layer
step 560 "gpt decode, folded rows" python benchmarks/gpt.py decode --repeats 5 --out-dir "$OUT" --tag folded \
  --only "folded" "static cache"
fi
if [ "$PART" = H ]; then
# session 5, call 3: attention calls replayed as CUDA graphs (attnkit.attention.graphed), linear's partial sums
step 150 "gpu tests" python -m pytest -q -p no:cacheprovider -m gpu tests/attention/test_graphed_gpu.py tests/attention/test_sparse_flex.py
step 200 "attention rows" python benchmarks/attention.py --suffix=-targets5 --out-dir "$OUT" --rows \
  dense:4096 bigbird:4096 bigbird@cg:4096 bigbird@t64cg:4096 linear:4096 linear@cg:4096 dense:1024 linear@cg:1024 \
  dense:16384 linear:16384 linear@cg:16384 bigbird@t64cg:16384 dense:4096 bigbird@t64cg:4096 linear@cg:4096
step 150 "long model" python benchmarks/long_model.py --modes eager --suffix=-graphs --out-dir "$OUT" \
  --kernels dense bigbird@t64cg linear@cg bigbird linear
fi
echo "== done after $(( $(date +%s) - S ))s"
} > "$OUT/pending.log" 2>&1
cat "$OUT/pending.log"

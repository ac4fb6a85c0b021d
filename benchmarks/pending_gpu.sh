#!/bin/bash
# The GPU measurements that code landed since the last device call is waiting for, in two calls
# of at most 10 minutes each on one H100/H200 (run from the repository root; attnkit need not
# be installed). Each step has its own time limit, so a slow step cannot take the others' results.
#
#   OUT=/some/dir bash benchmarks/pending_gpu.sh A DATA_DIR MINILM_DIR   # then B
#
# DATA_DIR holds multi30k/ and sst2/ (copies of ../shared/data); MINILM_DIR the
# all-MiniLM-L6-v2 tokenizer files (tokenizer.json, vocab.txt; the weights are not needed here).
# Everything printed goes to $OUT/pending.log; each benchmark writes its JSON into $OUT (few
# files: the device tool returns about ten).
PART=${1:?A or B}; DATA=${2:?data dir}; MINILM=${3:?all-MiniLM-L6-v2 dir}; OUT=${OUT:?set OUT}
export PYTHONPATH=. PYTHONUNBUFFERED=1
S=$(date +%s)
step() {  # seconds, description, command...
  local limit=$1 what=$2; shift 2
  echo "== $what (limit ${limit}s, at $(( $(date +%s) - S ))s)"
  timeout "$limit" "$@" 2>&1 | grep -v "Warning\|^W1\|warnings.warn" | tail -40
  echo "-- rc=${PIPESTATUS[0]}"
}
{
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
if [ "$PART" = A ]; then
# issue 6: linear compiled, lsh on FlexAttention, bigbird with 64-wide key tiles (max-autotune, last)
step 290 "attention targets" python benchmarks/attention.py --suffix=-targets --out-dir "$OUT" --rows \
  dense:4096 linear:4096 lsh:4096 bigbird:4096 dense:16384 linear:16384 lsh:16384 dense:65536 linear:65536 lsh:65536 \
  dense:1024 linear:1024 linear@causal:16384 dense@causal:16384 dense:32768 lsh:32768 bigbird@kv64:4096
# issue 4: decode with the greedy step inside the graph, the decode bias, and one-row linears (extra row)
step 150 "gpt decode" python benchmarks/gpt.py decode --repeats 3 --out-dir "$OUT"
# issue 3: attnkit / torch.nn.Transformer twin, eager and both compiled with dynamic=True
step 140 "translate speed" python benchmarks/translate.py --speed-only --data "$DATA/multi30k" --out-dir "$OUT"
else
# issue 6: lsh's compiled chunked path, linear with CUDA graphs, bigbird with 64 x 64 tiles (autotuned)
step 200 "attention targets 2" python benchmarks/attention.py --suffix=-targets2 --out-dir "$OUT" --rows \
  dense:16384 lsh:16384 dense:4096 linear:4096 linear@cg:4096 lsh:4096 dense:65536 lsh:65536 dense:32768 lsh:32768 \
  dense:1024 linear@cg:1024 bigbird:4096 bigbird@t64:4096
# the GPU tests of the new paths (FlexAttention LSH with gradients, compiled LSH and linear, bigbird tiles)
step 160 "gpu tests" python -m pytest -q -p no:cacheprovider -m gpu tests/attention/test_lsh_flex.py tests/attention/test_sparse_flex.py
# issue 5: SST-2 epoch wall, HF dynamic padding against attnkit's bucketed batches
step 180 "bert epoch" python benchmarks/bert_speed.py --data "$DATA" --tokenizer "$MINILM" --parts epoch --results "$OUT"
fi
echo "== done after $(( $(date +%s) - S ))s"
} > "$OUT/pending.log" 2>&1
cat "$OUT/pending.log"

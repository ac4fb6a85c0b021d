#!/bin/bash
# The GPU measurements that code landed since the last device call is waiting for, in one call
# of about 9 minutes on one H100/H200 (run from the repository root; attnkit need not be
# installed). Each step has its own time limit, so a slow step cannot take the others' results.
#
#   OUT=/some/dir bash benchmarks/pending_gpu.sh DATA_DIR MINILM_DIR
#
# DATA_DIR holds multi30k/ and sst2/ (copies of ../shared/data); MINILM_DIR the
# all-MiniLM-L6-v2 tokenizer files (tokenizer.json, vocab.txt; the weights are not needed here).
# (Fine-tuning runs do need its 91 MB model.safetensors, more than one device call carries:
# split it, carry one half in a first call that copies it to /tmp, the other in the next call
# while the machine is still warm, and join them with cat.) Everything printed
# goes to $OUT/pending.log; each benchmark writes its JSON into $OUT (few files: the device
# tool returns about ten).
DATA=${1:?data dir}; MINILM=${2:?all-MiniLM-L6-v2 dir}; OUT=${OUT:?set OUT}
export PYTHONPATH=. PYTHONUNBUFFERED=1
S=$(date +%s)
step() {  # seconds, description, command...
  local limit=$1 what=$2; shift 2
  echo "== $what (limit ${limit}s, at $(( $(date +%s) - S ))s)"
  timeout "$limit" "$@" 2>&1 | grep -v "Warning\|^W1\|warnings.warn" | tail -25
  echo "-- rc=${PIPESTATUS[0]}"
}
{
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
# issue 4: decode with the greedy step inside the graph, the decode bias, and one-row linears (extra row)
step 150 "gpt decode" python benchmarks/gpt.py decode --repeats 3 --out-dir "$OUT"
# issue 3: attnkit / torch.nn.Transformer twin, eager and both compiled with dynamic=True
step 150 "translate speed" python benchmarks/translate.py --speed-only --data "$DATA/multi30k" --out-dir "$OUT"
# issue 5: SST-2 epoch wall, HF dynamic padding against attnkit's bucketed batches
step 180 "bert epoch" python benchmarks/bert_speed.py --data "$DATA" --tokenizer "$MINILM" --parts epoch --results "$OUT"
# issue 6: sparse kernels with the padding mask on the FlexAttention path (steps per budget vs dense)
step 100 "listops flex+padding" python benchmarks/listops.py --kinds scaled_dot,sliding_window --no-speed --lr 1e-3 \
  --minutes-per-kind 0.5 --train-size 20000 --results "$OUT"
echo "== done after $(( $(date +%s) - S ))s"
} > "$OUT/pending.log" 2>&1
cat "$OUT/pending.log"

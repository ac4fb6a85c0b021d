#!/bin/bash
# Recipe sweep for the fine-tuning targets (SST-2, RTE, WNUT-17) from all-MiniLM-L6-v2, every
# configuration a separate `benchmarks/finetune.py` process, all at once on one GPU: accuracies
# are unaffected, wall times are shared-GPU times (the chosen recipe is timed alone afterwards).
#
#   bash benchmarks/finetune_sweep.sh DATA_DIR MODEL_DIR RESULTS_DIR [SECONDS]
#
# Each run writes RESULTS_DIR/finetune-<device>-<date>-sweep-<tag>.json; the summary table is
# printed by `python benchmarks/finetune_summary.py RESULTS_DIR`.
DATA=${1:?data dir}; MODEL=${2:?model dir}; RES=${3:?results dir}; LIMIT=${4:-330}
export PYTHONUNBUFFERED=1
run() {  # tag task [finetune.py options...]
  local tag=$1 task=$2; shift 2
  timeout "$LIMIT" python benchmarks/finetune.py --data "$DATA" --model "$MODEL" --tasks "$task" --out "/tmp/sweep/$tag" \
    --results "$RES" --tag "sweep-$tag" "$@" > "$RES/sweep-$tag.log" 2>&1 &
}
run s-mean-1e4   sst2 --set data.classifier=mean --set train.lr=1e-4
run s-mean-5e5   sst2 --set data.classifier=mean --set train.lr=5e-5
run s-mean-2e4   sst2 --set data.classifier=mean --set train.lr=2e-4
run s-tanh-1e4   sst2 --set data.classifier=cls_tanh --set train.lr=1e-4
run r-mean-5e5   rte --set data.classifier=mean --set train.lr=5e-5
run r-mean-5e5-s1 rte --set data.classifier=mean --set train.lr=5e-5 --set train.seed=1
run r-mean-1e4   rte --set data.classifier=mean --set train.lr=1e-4
run r-mean-3e5-20 rte --set data.classifier=mean --set train.lr=3e-5 --epochs 20
run r-pool-2e5-20 rte --set train.lr=2e-5 --epochs 20
run w-1e4-15     wnut17 --set train.lr=1e-4 --epochs 15
run w-2e4-10     wnut17 --set train.lr=2e-4 --epochs 10
run w-2e4-20     wnut17 --set train.lr=2e-4 --epochs 20
run w-3e4-10     wnut17 --set train.lr=3e-4 --epochs 10
wait

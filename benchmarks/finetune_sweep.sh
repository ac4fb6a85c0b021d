#!/bin/bash
# Recipe sweep for the fine-tuning targets (SST-2, RTE, WNUT-17) from all-MiniLM-L6-v2, every
# configuration a separate `benchmarks/finetune.py` process, all at once on one GPU: accuracies
# are unaffected, wall times are shared-GPU times (the chosen recipe is timed alone afterwards).
#
#   bash benchmarks/finetune_sweep.sh DATA_DIR MODEL_DIR RESULTS_DIR [SECONDS] [PLAN]
#
# PLAN 1 (default): session 1's sweep of pooling and learning rates. PLAN 2 (session 5): weight
# averaging (train.ema_decay), evaluation every 500 steps on SST-2, seeds, label smoothing.
# PLAN 3 (session 5, run right after plan 2 in the same lease; there the runs were typed into the
# device command, with tags sweep3-*): label smoothing with the best of plan 2. PLAN 4-5 (session 6):
# layer-wise lr decay. PLAN 6 (session 7): R-Drop and label smoothing (see the plan). PLAN 7
# (session 8): task-adaptive pretraining (--tapt-steps). PLAN 8 (session 9): uniform model soups
# (benchmarks/soup.py) of seeds fine-tuned from one starting point.
# Each run adds its --set options to the recipes of benchmarks/finetune.py as they were that day
# (the recipes changed after plan 3); each result JSON's "command" has the full command line.
# Each run writes RESULTS_DIR/finetune-<device>-<date>-sweep-<tag>.json; the summary table is
# printed by `python benchmarks/finetune_summary.py RESULTS_DIR`.
DATA=${1:?data dir}; MODEL=${2:?model dir}; RES=${3:?results dir}; LIMIT=${4:-330}; PLAN=${5:-1}
export PYTHONUNBUFFERED=1
run() {  # tag task [finetune.py options...]
  local tag=$1 task=$2; shift 2
  timeout "$LIMIT" python benchmarks/finetune.py --data "$DATA" --model "${FROM:-$MODEL}" --tasks "$task" --out "/tmp/sweep/$tag" \
    --results "$RES" --tag "sweep-$tag" "$@" > "$RES/sweep-$tag.log" 2>&1 &
}
if [ "$PLAN" = 1 ]; then
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
elif [ "$PLAN" = 2 ]; then
E5="--set train.eval_every=500"  # SST-2: 2,105 steps an epoch; the best of four looks an epoch
run s-5e5-e999        sst2 $E5 --set train.lr=5e-5 --set train.ema_decay=0.999
run s-5e5-e999-s1     sst2 $E5 --set train.lr=5e-5 --set train.ema_decay=0.999 --set train.seed=1
run s-3e5-e999-ep4    sst2 $E5 --set train.lr=3e-5 --set train.ema_decay=0.999 --epochs 4
run s-8e5-e999        sst2 $E5 --set train.lr=8e-5 --set train.ema_decay=0.999
run s-5e5-e9995-ep4   sst2 $E5 --set train.lr=5e-5 --set train.ema_decay=0.9995 --epochs 4
run s-5e5-e999-ls1    sst2 $E5 --set train.lr=5e-5 --set train.ema_decay=0.999 --set train.label_smoothing=0.1
run s-5e5-e999-do3    sst2 $E5 --set train.lr=5e-5 --set train.ema_decay=0.999 --set data.classifier_dropout=0.3
run s-1e4-b64-e999    sst2 $E5 --set train.lr=1e-4 --set train.batch_size=64 --set train.ema_decay=0.999 --epochs 4
run w-e99-s1          wnut17 --set train.lr=1e-4 --set train.ema_decay=0.99 --set train.seed=1
run w-e99-s2          wnut17 --set train.lr=1e-4 --set train.ema_decay=0.99 --set train.seed=2
run w-e99-s3          wnut17 --set train.lr=1e-4 --set train.ema_decay=0.99 --set train.seed=3
run w-e995-ep8        wnut17 --set train.lr=1e-4 --set train.ema_decay=0.995 --epochs 8
run w-e99-b16         wnut17 --set train.lr=1e-4 --set train.ema_decay=0.99 --set train.batch_size=16
run w-e99-ls1         wnut17 --set train.lr=1e-4 --set train.ema_decay=0.99 --set train.label_smoothing=0.1
run w-2e4-e995-ep8    wnut17 --set train.lr=2e-4 --set train.ema_decay=0.995 --epochs 8
run r-5e5-s4          rte --set train.lr=5e-5 --set train.seed=4
run r-5e5-s5          rte --set train.lr=5e-5 --set train.seed=5
run r-5e5-s6          rte --set train.lr=5e-5 --set train.seed=6
run r-3e5-b8          rte --set train.lr=3e-5 --set train.batch_size=8
run r-5e5-do3         rte --set train.lr=5e-5 --set data.classifier_dropout=0.3
elif [ "$PLAN" = 3 ]; then
E5="--set train.eval_every=500"
run s-8e5-ls1         sst2 $E5 --set train.lr=8e-5 --set train.ema_decay=0.999 --set train.label_smoothing=0.1
run s-8e5-ls1-s1      sst2 $E5 --set train.lr=8e-5 --set train.ema_decay=0.999 --set train.label_smoothing=0.1 --set train.seed=1
run s-1e4-ls1         sst2 $E5 --set train.lr=1e-4 --set train.ema_decay=0.999 --set train.label_smoothing=0.1
run s-8e5-ls2         sst2 $E5 --set train.lr=8e-5 --set train.ema_decay=0.999 --set train.label_smoothing=0.2
run s-1e4-b64-ls1     sst2 $E5 --set train.lr=1e-4 --set train.batch_size=64 --set train.ema_decay=0.999 --set train.label_smoothing=0.1 --epochs 4
run s-5e5-ls1-ep4     sst2 $E5 --set train.lr=5e-5 --set train.ema_decay=0.999 --set train.label_smoothing=0.1 --epochs 4
run w-ls1-s1          wnut17 --set train.label_smoothing=0.1 --set train.seed=1
run w-ls1-s2          wnut17 --set train.label_smoothing=0.1 --set train.seed=2
run w-ls1-s3          wnut17 --set train.label_smoothing=0.1 --set train.seed=3
run w-ls2             wnut17 --set train.label_smoothing=0.2
run w-ls1-b16         wnut17 --set train.label_smoothing=0.1 --set train.batch_size=16
run r-3e5-b8-s1       rte --set train.lr=3e-5 --set train.batch_size=8 --set train.seed=1
run r-3e5-b8-s2       rte --set train.lr=3e-5 --set train.batch_size=8 --set train.seed=2
run r-3e5-b8-ls1      rte --set train.lr=3e-5 --set train.batch_size=8 --set train.label_smoothing=0.1
elif [ "$PLAN" = 4 ]; then
# session 6: layer-wise learning-rate decay (train.layer_decay, ELECTRA's fine-tuning), higher
# top learning rates than without it, on each task's recipe in benchmarks/finetune.py
run s-ld9-1e4         sst2 --set train.layer_decay=0.9 --set train.lr=1e-4
run s-ld9-1e4-s1      sst2 --set train.layer_decay=0.9 --set train.lr=1e-4 --set train.seed=1
run s-ld9-15e5        sst2 --set train.layer_decay=0.9 --set train.lr=1.5e-4
run s-ld8-15e5        sst2 --set train.layer_decay=0.8 --set train.lr=1.5e-4
run s-ld8-2e4         sst2 --set train.layer_decay=0.8 --set train.lr=2e-4
run s-ld85-12e5-ls1   sst2 --set train.layer_decay=0.85 --set train.lr=1.2e-4 --set train.label_smoothing=0.1
run w-ld9-2e4         wnut17 --set train.layer_decay=0.9 --set train.lr=2e-4
run w-ld9-2e4-s1      wnut17 --set train.layer_decay=0.9 --set train.lr=2e-4 --set train.seed=1
run w-ld9-2e4-s3      wnut17 --set train.layer_decay=0.9 --set train.lr=2e-4 --set train.seed=3
run w-ld8-2e4         wnut17 --set train.layer_decay=0.8 --set train.lr=2e-4
run w-ld8-3e4         wnut17 --set train.layer_decay=0.8 --set train.lr=3e-4
run w-ld9-15e5        wnut17 --set train.layer_decay=0.9 --set train.lr=1.5e-4
run w-ld8-3e4-ls1     wnut17 --set train.layer_decay=0.8 --set train.lr=3e-4 --set train.label_smoothing=0.1
run r-ld9-5e5         rte --set train.layer_decay=0.9 --set train.lr=5e-5
run r-ld9-5e5-s1      rte --set train.layer_decay=0.9 --set train.lr=5e-5 --set train.seed=1
run r-ld8-8e5         rte --set train.layer_decay=0.8 --set train.lr=8e-5
run r-ld9-5e5-s2      rte --set train.layer_decay=0.9 --set train.lr=5e-5 --set train.seed=2
elif [ "$PLAN" = 5 ]; then
# session 6, right after plan 4 in the same lease: seeds and neighbours of plan 4's best runs
L="--set train.label_smoothing=0.1"
run s-ld85-12e5-ls1-s1 sst2 $L --set train.layer_decay=0.85 --set train.lr=1.2e-4 --set train.seed=1
run s-ld85-12e5-ls1-s2 sst2 $L --set train.layer_decay=0.85 --set train.lr=1.2e-4 --set train.seed=2
run s-ld85-1e4-ls1    sst2 $L --set train.layer_decay=0.85 --set train.lr=1e-4
run s-ld85-15e5-ls1   sst2 $L --set train.layer_decay=0.85 --set train.lr=1.5e-4
run s-ld8-12e5-ls1    sst2 $L --set train.layer_decay=0.8 --set train.lr=1.2e-4
run s-ld85-12e5-ls1-ep4 sst2 $L --set train.layer_decay=0.85 --set train.lr=1.2e-4 --epochs 4
run w-ld9-2e4-s2      wnut17 --set train.layer_decay=0.9 --set train.lr=2e-4 --set train.seed=2
run w-ld9-2e4-s4      wnut17 --set train.layer_decay=0.9 --set train.lr=2e-4 --set train.seed=4
run w-ld9-2e4-s5      wnut17 --set train.layer_decay=0.9 --set train.lr=2e-4 --set train.seed=5
run w-ld9-25e5        wnut17 --set train.layer_decay=0.9 --set train.lr=2.5e-4
run w-ld95-2e4        wnut17 --set train.layer_decay=0.95 --set train.lr=2e-4
run w-ld9-2e4-ep8     wnut17 --set train.layer_decay=0.9 --set train.lr=2e-4 --epochs 8
run r-ld9-5e5-s3      rte --set train.layer_decay=0.9 --set train.lr=5e-5 --set train.seed=3
run r-ld9-5e5-s4      rte --set train.layer_decay=0.9 --set train.lr=5e-5 --set train.seed=4
run r-ld9-5e5-s5      rte --set train.layer_decay=0.9 --set train.lr=5e-5 --set train.seed=5
elif [ "$PLAN" = 6 ]; then
# session 7: R-Drop (train.rdrop; Liang et al. 2021) and label smoothing that now takes effect
# (before session 7, classify and ner ignored train.label_smoothing: plans 3-5's "ls" runs had none)
run s-rd05            sst2 --set train.rdrop=0.5
run s-rd05-s1         sst2 --set train.rdrop=0.5 --set train.seed=1
run s-rd05-s2         sst2 --set train.rdrop=0.5 --set train.seed=2
run s-rd1             sst2 --set train.rdrop=1.0
run s-rd1-s1          sst2 --set train.rdrop=1.0 --set train.seed=1
run s-ls1             sst2 --set train.label_smoothing=0.1
run s-ls1-s1          sst2 --set train.label_smoothing=0.1 --set train.seed=1
run s-rd05-ls1        sst2 --set train.rdrop=0.5 --set train.label_smoothing=0.1
run r-rd05            rte --set train.rdrop=0.5
run r-rd05-s1         rte --set train.rdrop=0.5 --set train.seed=1
run r-rd1             rte --set train.rdrop=1.0
run w-rd05            wnut17 --set train.rdrop=0.5
run w-rd05-s1         wnut17 --set train.rdrop=0.5 --set train.seed=1
run w-rd1             wnut17 --set train.rdrop=1.0
run w-ls1             wnut17 --set train.label_smoothing=0.1
elif [ "$PLAN" = 7 ]; then
# session 8: task-adaptive pretraining (--tapt-steps: attnkit train mlm --model on the task's training
# sentences, then the task's recipe from the TAPT model; Gururangan et al. 2020)
run s-t1000           sst2 --tapt-steps 1000
run s-t1000-s1        sst2 --tapt-steps 1000 --set train.seed=1
run s-t1000-s2        sst2 --tapt-steps 1000 --set train.seed=2
run s-t2500           sst2 --tapt-steps 2500
run s-t1000-rd1       sst2 --tapt-steps 1000 --set train.rdrop=1.0
run r-t1000           rte --tapt-steps 1000
run r-t1000-s1        rte --tapt-steps 1000 --set train.seed=1
run r-t1000-s2        rte --tapt-steps 1000 --set train.seed=2
run w-t1000           wnut17 --tapt-steps 1000
run w-t1000-s1        wnut17 --tapt-steps 1000 --set train.seed=1
run w-t1000-s2        wnut17 --tapt-steps 1000 --set train.seed=2
elif [ "$PLAN" = 8 ]; then
# session 9: uniform model soups (Wortsman et al. 2022; benchmarks/soup.py), the ingredients fine-tuned
# from one starting point with one head initialisation (train.init_seed=0) and different seeds.
# Phase 1: one SST-2 TAPT model (1,000 steps); meanwhile WNUT-17's recipe (6 seeds) and SST-2's
# recipe with R-Drop 1.0 from the checkpoint itself (4 seeds). Phase 2: SST-2 with R-Drop 1.0 from
# the TAPT model (5 seeds). Then one soup per group, scored next to its ingredients and their ensemble.
timeout 240 python benchmarks/finetune.py --data "$DATA" --model "$MODEL" --tasks sst2 --tapt-steps 1000 --tapt-only \
  --out /tmp/sweep/s-tapt --results "$RES" --tag sweep-s-tapt > "$RES/sweep-s-tapt.log" 2>&1 &
TAPT=$!
for s in 0 1 2 3 4 5; do run "w-soup-s$s" wnut17 --set "train.seed=$s"; done
for s in 0 1 2 3; do run "s-rd1-soup-s$s" sst2 --set train.rdrop=1.0 --set "train.seed=$s"; done
wait "$TAPT"
LIMIT=$(( LIMIT > 330 ? 330 : LIMIT ))
if [ -f /tmp/sweep/s-tapt/sst2-tapt/model/config.json ]; then
  for s in 0 1 2 3 4; do FROM=/tmp/sweep/s-tapt/sst2-tapt/model run "s-t1000-rd1-soup-s$s" sst2 --set train.rdrop=1.0 --set "train.seed=$s"; done
fi
wait
for group in "wnut17 w-soup" "sst2 s-rd1-soup" "sst2 s-t1000-rd1-soup"; do
  set -- $group
  timeout 120 python benchmarks/soup.py --task "$1" --data "$DATA" --out "/tmp/sweep/soups-$2" --results "$RES" --tag "sweep-$2" \
    /tmp/sweep/"$2"-s* 2>&1 | tee "$RES/soup-$2.log" | tail -12
done
fi
wait

#!/usr/bin/env bash
# The transfer study of docs/pretrain-finetune.md on LIBERO-Object, sized for one session on a 2-core CPU:
# pretrain one MoDE (state, language goals) on tasks libero_object/0..8 (450 scripted demos), then fine-tune on the
# held-out task libero_object/9 with 5 and with 20 demos, three arms x three seeds:
#   scratch  trained from its own random initialisation;
#   ft       init_from the pretrained run, routers frozen (freeze=["*router*"], as MoDE's fine-tuning does);
#   ctrl     the negative control: init_from a practically untrained checkpoint (one step at lr 1e-12, built like
#            the pretraining run, with its seed), routers frozen: the same loading path and schedule as ft
#            without the pretrained weights (if ctrl also beats scratch, the gain is not the pretraining).
# Every fine-tuned run is evaluated on 50 episodes of libero_object/9; all arms use the same evaluation seeds
# (conf/eval.yaml seed_offset, left at its default), so episodes pair for McNemar's test. The report:
#   python -m benchmarks.transfer_report outputs/transfer_libero --markdown
#
# Estimated wall time: about 130 min (150 with margin) on an otherwise idle 2-core CPU. How:
#   demos     500 libero_object episodes took 594 s with workers=2 (outputs/suites/libero-object-state-cpu,
#             2026-12-08), so 450 take ~9 min; the 21 of task 9 ~1 min                              ~10 min
#   training  MoDE on this state at batch 256 with one thread ran 2.5 steps/s (the same suite's training log,
#             its first 300 steps, alone on the machine): pretraining PRE_STEPS=5000 ~33 min, + ~2 min of
#             start-up and validation = 35 lane-min; each fine-tuning run FT_STEPS=1000 ~6.7 min + ~0.8
#             = 7.5 lane-min, 18 runs = 135 lane-min; the 1-step control checkpoint ~0.5 lane-min
#   rollouts  a 50-episode evaluation of one LIBERO task takes 1-2 min with 2 workers on both cores; here
#             each runs with workers=1 on one core beside a training run, ~3 lane-min, 18 of them = 54 lane-min
#   two lanes (one core each, OMP_NUM_THREADS=1) share 35 + 0.5 + 135 + 54 = 225 lane-min: ~112 min, plus up
#             to one job (~10 min) of imbalance at the end, plus the demos: ~130 min. At 2.1 steps/s (a busier
#             machine) it is ~145 min. Lane A pretrains while lane B makes the control checkpoint and starts
#             on scratch and ctrl runs; then both take jobs from one list (seed 0 first), ft jobs once the
#             pretrained run exists.
# Rerunning the script continues: stores are topped up, finished jobs are skipped (STUDY/.state), a training
# run stopped half-way resumes from its last.ckpt, an evaluated run is not evaluated again.
#
# Knobs (environment): STUDY (outputs/transfer_libero), PRE_STEPS (5000), FT_STEPS (1000), EVAL_EPISODES (50),
# PYTHON (python), RESULT (benchmarks/results/transfer/libero_object.json: written, with its .png and .md,
# when every job succeeded), DRY_RUN=1 (print the commands in the order one lane would run them, run nothing).
set -euo pipefail
cd "$(dirname "$0")/.."
export OMP_NUM_THREADS=1  # two runs at a time, one core each

PY=${PYTHON:-python}
STUDY=${STUDY:-outputs/transfer_libero}
PRE_STEPS=${PRE_STEPS:-5000}
FT_STEPS=${FT_STEPS:-1000}
EVAL_EPISODES=${EVAL_EPISODES:-50}
RESULT=${RESULT:-benchmarks/results/transfer/libero_object.json}
DRY_RUN=${DRY_RUN:-0}
SEEDS=(0 1 2)
DEMOS=(5 20)
ARMS=(scratch ctrl ft)  # the order jobs are taken in, per seed and demo count
PRE_TASKS=libero_object/0,libero_object/1,libero_object/2,libero_object/3,libero_object/4,libero_object/5,libero_object/6,libero_object/7,libero_object/8
HELD_OUT=libero_object/9
LABEL=libero_object_9  # the held-out task in run names: {arm}-{task}-{n}-s{seed}
PRE_STORE=datasets/libero_object_pre9.zarr
FT_STORE=datasets/libero_object_ft9.zarr

# Pretraining on the 9-task store; the control checkpoint is the same run stopped after one step at lr 1e-12.
PRE_ARGS=(policy=mode task=libero_object "task.dataset=$PRE_STORE" task.n_demos=450 seed=0 threads=1)
# Fine-tuning: the one-task store of the held-out task (21 episodes: 1 validation, the first 5 or 20 of the
# other 20 for training; the 5 are among the 20). task.name makes train.py generate that task, should the store
# be missing. With language goals, the 9-task checkpoint loads into this 1-task policy whole: the goal
# projection keeps its shape; the instruction table (lang_table) and normaliser come from this run's data.
FT_ARGS=(policy=mode task=libero_object "task.name=$HELD_OUT" "task.dataset=$FT_STORE" task.n_demos=21
         data.val_ratio=0.05 "trainer.max_steps=$FT_STEPS" logger=csv threads=1)

if [ "$DRY_RUN" = 1 ]; then STATE=$(mktemp -d); else STATE=$STUDY/.state; fi
CLAIMS=$STATE/claims.$$  # this invocation's job claims (a claim is an atomic mkdir)
mkdir -p "$STATE/done" "$CLAIMS"
[ "$DRY_RUN" = 1 ] || mkdir -p "$STUDY/logs"
trap 'rm -rf "$CLAIMS"; [ "$DRY_RUN" = 1 ] && rm -rf "$STATE"; true' EXIT

say() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*"; }
shown() {  # the command as one pastes it: arguments with shell characters in single quotes
  local a out=()
  for a in "$@"; do
    if [[ $a =~ ^[A-Za-z0-9_./=:,+-]+$ ]]; then out+=("$a"); else out+=("'$a'"); fi
  done
  echo "${out[*]}"
}
done_() { [ -e "$STATE/done/$1" ]; }
mark() { [ "$DRY_RUN" = 1 ] || touch "$STATE/done/$1"; }

# step LANE WHAT LOG CMD...: run CMD with its output in LOG, one line when it starts and one when it ends.
step() {
  local lane=$1 what=$2 log=$3 t0=$SECONDS
  shift 3
  if [ "$DRY_RUN" = 1 ]; then shown "$@"; return 0; fi
  say "$lane: $what"
  if "$@" >>"$log" 2>&1; then
    say "$lane: $what: done in $(((SECONDS - t0) / 60)) min"
  else
    say "$lane: $what: FAILED (log: $log)"
    return 1
  fi
}

# train LANE NAME ARGS...: a training run in STUDY/NAME, resumed when an earlier invocation left a last.ckpt.
train() {
  local lane=$1 name=$2 run=$STUDY/$2
  shift 2
  done_ "$name.trained" && return 0
  local resume=()
  if [ -e "$run/checkpoints/last.ckpt" ]; then
    resume=("resume=$run")
  elif [ "$DRY_RUN" != 1 ]; then
    rm -rf "${run:?}"  # a start that never saved: begin again
  fi
  step "$lane" "$name: training" "$STUDY/logs/$name.log" "$PY" train.py "$@" "run_dir=$run" "${resume[@]}"
  mark "$name.trained"
}

pretrain() {
  train "$1" pre "${PRE_ARGS[@]}" "trainer.max_steps=$PRE_STEPS" logger=csv
}

control_checkpoint() {
  train "$1" rand "${PRE_ARGS[@]}" trainer.max_steps=1 optim.lr=1e-12 optim.warmup_steps=1 logger=none
}

# arm_job LANE ARM N SEED: fine-tune one arm, then evaluate it.
arm_job() {
  local lane=$1 arm=$2 n=$3 s=$4
  local name=$arm-$LABEL-$n-s$s init=()
  done_ "$name" && return 0
  case $arm in
    ft) init=("init_from=$STUDY/pre" 'freeze=["*router*"]') ;;
    ctrl) init=("init_from=$STUDY/rand" 'freeze=["*router*"]') ;;
  esac
  train "$lane" "$name" "${FT_ARGS[@]}" "data.max_train_episodes=$n" "seed=$s" "${init[@]}"
  step "$lane" "$name: evaluating $EVAL_EPISODES episodes" "$STUDY/logs/$name.log" "$PY" eval_rollouts.py \
    "checkpoint=$STUDY/$name" "n_episodes=$EVAL_EPISODES" workers=1 video.n=0 logger=none
  mark "$name"
}

needs() {  # the run an arm starts from
  case $1 in ft) echo pre ;; ctrl) echo rand ;; *) echo "" ;; esac
}

JOBS=()
for s in "${SEEDS[@]}"; do for n in "${DEMOS[@]}"; do for arm in "${ARMS[@]}"; do
  JOBS+=("$arm:$n:$s")
done; done; done

# lane NAME FIRST: run FIRST (pretrain or control_checkpoint), then take jobs from JOBS until none is left; a
# job whose starting run is not trained yet is passed over until it is. A lane that fails stops the other.
lane() {
  local name=$1 first=$2
  trap 'touch "$CLAIMS/failed"' EXIT
  "$first" "$name"
  while :; do
    local waiting=0 ran=0 job arm n s dep
    for job in "${JOBS[@]}"; do
      if [ -e "$CLAIMS/failed" ]; then say "$name: stopping: the other lane failed"; exit 1; fi
      [ -e "$CLAIMS/$job" ] && continue
      IFS=: read -r arm n s <<<"$job"
      dep=$(needs "$arm")
      if [ -n "$dep" ] && ! done_ "$dep.trained" && [ "$DRY_RUN" != 1 ]; then waiting=1; continue; fi
      mkdir "$CLAIMS/$job" 2>/dev/null || continue  # the other lane took it
      arm_job "$name" "$arm" "$n" "$s"
      ran=1
    done
    [ "$waiting" = 0 ] && break
    [ "$ran" = 0 ] && sleep 20
  done
  trap - EXIT
}

T0=$SECONDS
step main "demos: 9 pretraining tasks" "$STUDY/logs/demos.log" "$PY" -m data.generate "task=$PRE_TASKS" \
  n_episodes=450 "out=$PRE_STORE" workers=2
step main "demos: held-out task" "$STUDY/logs/demos.log" "$PY" -m data.generate "task=$HELD_OUT" n_episodes=21 \
  "out=$FT_STORE" workers=2

if [ "$DRY_RUN" = 1 ]; then  # one lane, in order: the commands, not the schedule
  pretrain A && control_checkpoint A
  for job in "${JOBS[@]}"; do IFS=: read -r arm n s <<<"$job"; arm_job A "$arm" "$n" "$s"; done
  echo "$PY -m benchmarks.transfer_report $STUDY --save $RESULT --markdown --plot ${RESULT%.json}.png"
  exit 0
fi

lane A pretrain &
LANE_A=$!
lane B control_checkpoint &
LANE_B=$!
status=0
wait "$LANE_A" || status=1
wait "$LANE_B" || status=1
say "study: $(((SECONDS - T0) / 60)) min"

REPORT=(-m benchmarks.transfer_report "$STUDY" --markdown)
mkdir -p "$(dirname "$RESULT")"  # tee opens the .md before the report writes its .json there
if [ "$status" = 0 ]; then
  "$PY" "${REPORT[@]}" --save "$RESULT" --plot "${RESULT%.json}.png" | tee "${RESULT%.json}.md"
  say "results: $RESULT (commit it with its .png and .md)"
else
  "$PY" "${REPORT[@]}" --save "$STUDY/report.json" --plot "$STUDY/report.png" | tee "$STUDY/report.md" || true
  say "some jobs failed (logs in $STUDY/logs); the runs so far are in $STUDY/report.md; rerun to continue"
  exit 1
fi

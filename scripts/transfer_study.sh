#!/usr/bin/env bash
# The transfer study of docs/pretrain-finetune.md: MT50, pretrain on 45 tasks, fine-tune on each of the 5 held
# out with 5 and 20 demos, against scratch and a randomly initialised checkpoint loaded through init_from,
# three seeds. Days of CPU: run it on a machine whose outputs/ survive. Not run yet.
set -euo pipefail
cd "$(dirname "$0")/.."
PRE=$(python -c "from envs.metaworld_tasks import MT50; print(','.join(MT50[:45]))")
HELD_OUT=$(python -c "from envs.metaworld_tasks import MT50; print(' '.join(MT50[45:]))")
python -m data.generate task=$PRE n_episodes=2250 out=datasets/mt45.zarr workers=2
for t in $HELD_OUT; do python -m data.generate task=$t n_episodes=21 out=datasets/ft-$t.zarr workers=2; done

for s in 0 1 2; do
  python train.py policy=mode task=mt50 task.dataset=datasets/mt45.zarr task.n_demos=2250 seed=$s \
    logger=csv run_dir=outputs/transfer/pre-s$s
  # the negative control: the same architecture, (practically) untrained, written by one step at lr 1e-12
  python train.py policy=mode task=mt50 task.dataset=datasets/mt45.zarr task.n_demos=2250 seed=$s \
    trainer.max_steps=1 optim.lr=1e-12 optim.warmup_steps=1 logger=none run_dir=outputs/transfer/rand-s$s
  for t in $HELD_OUT; do for n in 5 20; do
    common="policy=mode task=mt50 task.dataset=datasets/ft-$t.zarr task.n_demos=21 data.val_ratio=0.05
            data.max_train_episodes=$n trainer.max_steps=500 seed=$s logger=csv"
    python train.py $common run_dir=outputs/transfer/scratch-$t-$n-s$s
    python train.py $common init_from=outputs/transfer/pre-s$s  'freeze=["*router*"]' \
      run_dir=outputs/transfer/ft-$t-$n-s$s
    python train.py $common init_from=outputs/transfer/rand-s$s 'freeze=["*router*"]' \
      run_dir=outputs/transfer/ctrl-$t-$n-s$s
    for arm in scratch ft ctrl; do
      python eval_rollouts.py checkpoint=outputs/transfer/$arm-$t-$n-s$s n_episodes=50 logger=none
    done
  done; done
done

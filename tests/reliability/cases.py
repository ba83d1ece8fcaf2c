"""The reliability battery's inputs (issue #35): each bad input a careful or hostile user tried, and the
kind it stands for, by entry point. Shared by test_battery.py (which asserts the verdict) and
count_verdicts.py (which counts the verdicts of any checkout, before and after a change).

Each case: (id, overrides, what the one-line message must name). `{store}`, `{tmp}`, `{file}`, `{loop}` are
filled in by the runner: the tiny store, a fresh directory, an existing file, a symlink loop.
"""

from __future__ import annotations

LONG_NAME = "r" * 300  # one path component over NAME_MAX

# train.py: values checked by check_train_config / check_against_store, before any step.
TRAIN_CASES: list[tuple[str, list[str], str]] = [
    ("top_k>experts", ["policy.top_k=8"], "policy.top_k"),
    ("width%heads", ["policy.width=33"], "policy.width"),
    ("sampler-name", ["policy.sampler=foo"], "policy.sampler"),
    ("normalizer-name", ["normalizer.action=foo"], "normalizer.action"),
    ("normalizer-low-dim", ["normalizer.low_dim=zscore"], "normalizer.low_dim"),
    ("sigma_min>max", ["policy.sigma_min=100"], "policy.sigma_min"),
    ("dropout>1", ["policy.dropout=1.5"], "policy.dropout"),
    ("experts=0", ["policy.num_experts=0"], "policy.num_experts"),
    ("heads=0", ["policy.n_heads=0"], "policy.n_heads"),
    ("expert_hidden=0", ["policy.expert_hidden=0"], "policy.expert_hidden"),
    ("layers=0", ["policy.n_layers=0"], "policy.n_layers"),
    ("state_hidden=-1", ["policy.state_hidden=-1"], "policy.state_hidden"),
    ("accelerator-name", ["trainer.accelerator=tpu9"], "trainer.accelerator"),
    ("accelerator-absent", ["trainer.accelerator=gpu"], "trainer.accelerator"),  # on a machine without CUDA
    ("obs_keys-empty", ["task.obs_keys=[]"], "task.obs_keys"),
    ("obs_keys-action", ["task.obs_keys=[robot0_eef_pos,action]"], "task.obs_keys"),
    ("obs_keys-absent", ["task.obs_keys=[robot0_eef_pos,no_such_key]"], "task.obs_keys"),
    ("monitor-unknown", ["checkpoint.monitor=val/nonexistent"], "checkpoint.monitor"),
    ("monitor-eval-off", ["checkpoint.monitor=eval/success_rate"], "checkpoint.monitor"),
    ("checkpoint-mode", ["checkpoint.mode=avg"], "checkpoint.mode"),
    ("batch-memory", ["data.batch_size=3000000"], "data.batch_size"),
    ("batch-text", ["data.batch_size=abc"], "data.batch_size"),
    ("horizon<chunk", ["policy.horizon=3"], "policy.horizon"),
    ("betas-one", ["optim.betas=[0.9]"], "optim.betas"),
    ("ema-order", ["ema.min_decay=0.9", "ema.max_decay=0.5"], "ema.min_decay"),
    ("threads=0", ["threads=0"], "threads"),
    ("dataset-symlink-loop", ["task.dataset={loop}"], "task.dataset"),
]
# train.py: the run directory (hydra.run.dir), checked before Hydra or the run writes into it.
RUN_DIR_CASES: list[tuple[str, str, str]] = [
    ("run-dir-too-long", "{tmp}/" + LONG_NAME, "too long"),
    ("run-dir-is-a-file", "{file}", "is a file"),
    ("run-dir-under-a-file", "{file}/run", "not a directory"),
    ("run-dir-under-/dev/full", "/dev/full/run", "not a directory"),
]
# eval_rollouts.py: conf/eval.yaml values, checked before the policy is built or a worker started.
EVAL_CASES: list[tuple[str, list[str], str]] = [
    ("action-steps>chunk", ["n_action_steps=100"], "n_action_steps"),
    ("sample_seed-text", ["sample_seed=abc"], "sample_seed"),
    ("worker-timeout-tiny", ["worker_timeout_s=0.3"], "worker_timeout_s"),
    ("video-source-typo", ["video.source=agentveiw_image", "video.n=1", "env_factory=null"], "video.source"),
    ("episodes=0", ["n_episodes=0"], "n_episodes"),
    ("workers=0", ["workers=0"], "workers"),
    ("precision-name", ["precision=fp8"], "precision"),
    ("video.n<0", ["video.n=-1"], "video.n"),
    ("out-is-a-file", ["out={file}"], "out"),
    ("out-too-long", ["out={tmp}/" + LONG_NAME], "out"),
    ("out-under-/dev/full", ["out=/dev/full/x"], "out"),
]
# python -m data.generate: arguments checked before any simulator starts.
GENERATE_CASES: list[tuple[str, list[str], str]] = [
    ("noise-nan", ["noise=nan"], "noise"),
    ("noise-inf", ["noise=inf"], "noise"),
    ("noise-negative", ["noise=-0.1"], "noise"),
    ("episodes=0", ["n_episodes=0"], "n_episodes"),
    ("seed-negative", ["seed=-1"], "seed"),
    ("workers-negative", ["workers=-1"], "workers"),
]
# python -m data.export: outputs and damaged stores.
EXPORT_CASES: list[tuple[str, list[str], str]] = [
    ("robomimic-existing-file", ["out={file}", "format=robomimic"], "already exists"),
    ("lerobot-existing-dir", ["out={tmp}", "format=lerobot"], "already exists"),
    ("format-name", ["out={tmp}/x.hdf5", "format=csv"], "format"),
    ("truncated-chunk", ["out={tmp}/new/x.hdf5", "format=robomimic", "damaged"], "data/object"),
]
# python -m benchmarks.suite SUITE: the results directory, checked before the first command.
SUITE_CASES: list[tuple[str, list[str], str]] = [
    ("out-under-/dev/full", ["out=/dev/full/x"], "out=/dev/full/x"),
    ("out-is-a-file", ["out={file}"], "is a file"),
]
# Inputs that are fine: accepted, and what they ask for is done.
ACCEPTED_CASES: list[tuple[str, list[str]]] = [
    ("export-into-missing-parent", ["out={tmp}/exports/lift.hdf5", "format=robomimic"]),
]

"""Evaluate a trained policy by simulated rollouts (see conf/eval.yaml for every knob):

    python eval_rollouts.py checkpoint=PATH n_episodes=50 workers=2 video.n=4
    python eval_rollouts.py checkpoint=latest            # newest outputs/*/*/checkpoints/last.ckpt

A Hydra main and nothing else: the evaluation is training/evaluate.py (results in <run dir>/eval/,
W&B, the checks of every input), the rollouts rollouts/runner.py. Exit codes: 0 done, 2 a bad config value,
1 another user error (one line on stderr each), 3 episodes errored (allow_errors=true accepts them),
130 / 143 interrupted by Ctrl-C / SIGTERM (the workers closed first). docs/reliability.md says more.
"""

from __future__ import annotations

from envs.threads import prepare_process

prepare_process()  # before torch loads: waiting threads sleep (envs/threads.py)

import shlex  # noqa: E402
import sys  # noqa: E402

import hydra  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from training.evaluate import EvalError, evaluate, load_config, run_cli  # noqa: E402

__all__ = ["EvalError", "evaluate", "load_config", "main"]


@hydra.main(config_path="conf", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> None:
    code = run_cli(cfg, command=shlex.join(["python", *sys.argv]))
    if code:
        sys.exit(code)


if __name__ == "__main__":
    main()

"""Train a policy: `python train.py policy=mode task=lift` (see conf/config.yaml for every knob).

A Hydra main and nothing else: the run itself is training/run.py.
"""

from __future__ import annotations

from envs.threads import prepare_process

prepare_process()  # before torch loads: waiting threads sleep (envs/threads.py)

import os  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import hydra  # noqa: E402
from hydra.core.hydra_config import HydraConfig  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from training.errors import USER_ERRORS  # noqa: E402
from training.hydra_configs import register_policy_defaults  # noqa: E402
from training.run import train  # noqa: E402
from training.run_dir import discard_refused_run_dir, train_argv  # noqa: E402

register_policy_defaults()  # conf/policy/*.yaml start from the dataclasses' defaults


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
        train(resolved, run_dir, command=" ".join(["python", *sys.argv]))
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        discard_refused_run_dir(run_dir, HydraConfig.get().output_subdir)
        sys.exit(2)


if __name__ == "__main__":
    try:  # before Hydra creates (and logs into) the run directory: resume= in place, a free, writable one
        sys.argv[1:] = train_argv(sys.argv[1:])
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    main()

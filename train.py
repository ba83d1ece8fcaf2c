"""Train a policy: `python train.py policy=mode task=lift` (see conf/config.yaml for every knob).

A Hydra main and nothing else: the run itself is training/run.py.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, OmegaConf

from training.errors import USER_ERRORS
from training.hydra_configs import register_policy_defaults
from training.run import train

register_policy_defaults()  # conf/policy/*.yaml start from the dataclasses' defaults


@hydra.main(config_path="conf", config_name="config", version_base="1.3")
def main(cfg: DictConfig) -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        resolved = OmegaConf.to_container(cfg, resolve=True)
        train(resolved, Path(HydraConfig.get().runtime.output_dir))
    except USER_ERRORS as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()

"""Serve a trained policy to robots over WebSocket (see conf/serve.yaml for every knob, docs/deploy.md):

    python serve.py checkpoint=PATH [host=127.0.0.1] [port=8765] [token=...] [precision=fp32|bf16|int8]

A Hydra main and nothing else: the server is serving/. Exit codes: 0 stopped by Ctrl-C, 1 a user error
(one line on stderr).
"""

from __future__ import annotations

from envs.threads import prepare_process

prepare_process()  # before torch loads: waiting threads sleep (envs/threads.py)

import logging  # noqa: E402
import sys  # noqa: E402

import hydra  # noqa: E402
from omegaconf import DictConfig, OmegaConf  # noqa: E402

from envs.threads import use_threads  # noqa: E402
from serving.app import ServeError, run_server, server_config  # noqa: E402
from training.checkpoint import CheckpointError, resolve_checkpoint  # noqa: E402


@hydra.main(config_path="conf", config_name="serve", version_base="1.3")
def main(cfg: DictConfig) -> None:
    resolved = OmegaConf.to_container(cfg, resolve=True)
    logging.getLogger("serve").setLevel(logging.INFO)
    try:
        server_config(resolved)
        path = resolve_checkpoint(resolved["checkpoint"], resolved["outputs_dir"])
        use_threads(resolved["threads"])
        run_server(resolved, path)
    except (ServeError, CheckpointError, TypeError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        print("stopped", file=sys.stderr)


if __name__ == "__main__":
    main()

"""What `python serve.py` runs: the model from the checkpoint, then the server until Ctrl-C."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from serving.model import ServedModel, ServeError
from serving.server import PolicyServer, ServerConfig

log = logging.getLogger("serve")


def server_config(cfg: dict[str, Any]) -> ServerConfig:
    names = {f.name for f in dataclasses.fields(ServerConfig)}
    config = ServerConfig(**{k: v for k, v in cfg.items() if k in names})
    config.check()  # before the model loads: a refused bind costs nothing
    return config


def run_server(cfg: dict[str, Any], checkpoint: Path) -> None:
    config = server_config(cfg)
    device = cfg["device"]
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    model = ServedModel.load(checkpoint, cfg["precision"], device, cfg["compile"])
    log.info("loaded %s (%s, model hash %s) from %s", model.policy.name, cfg["precision"], model.model_hash,
             checkpoint)
    try:
        asyncio.run(PolicyServer(model, config).serve())
    except OSError as err:
        raise ServeError(f"cannot listen on {config.host}:{config.port}: {err.strerror or err}") from None


__all__ = ["ServeError", "run_server", "server_config"]

"""The errors a user can cause (and fix) that entry points print as one line instead of a traceback."""

from __future__ import annotations

from data.dir_lock import LockError
from data.mixture import MixtureError
from data.store import StoreError
from policies.base import CheckpointError
from training.checkpoint_io import CheckpointWriteError
from training.config_check import ConfigError
from training.demos import DatasetError
from training.module import NonFiniteLoss

USER_ERRORS: tuple[type[BaseException], ...] = (ConfigError, CheckpointError, DatasetError, StoreError,
                                                NonFiniteLoss, CheckpointWriteError, LockError, MixtureError)

"""Policies: the diffusion core, MoDE, baselines, encoders and the Lightning module.

Importing this package registers every policy in `policies.base.POLICY_REGISTRY`.
"""

import importlib

from policies import dit, mode  # noqa: F401  (registers "dit", "mode")

# The CNN baseline registers "cnn" from policies/cnn_unet.py; guarded until that file lands.
try:
    importlib.import_module("policies.cnn_unet")
except ModuleNotFoundError as err:  # only the missing file is tolerated, never an error inside it
    if err.name != "policies.cnn_unet":
        raise

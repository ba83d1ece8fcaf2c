"""Policies: the diffusion core, MoDE and its baselines, and their encoders (a library: no Lightning, no W&B).

Importing this package registers every policy in `policies.base.POLICY_REGISTRY`.
"""

from policies import cnn_unet, dit, mode  # noqa: F401  (registers "cnn", "dit", "mode")

"""Policies: the diffusion core, MoDE, baselines, encoders and the Lightning module.

Importing this package registers every policy in `policies.base.POLICY_REGISTRY`.
"""

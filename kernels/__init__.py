"""MoE kernels: public ops (dispatching to Triton or PyTorch) and their reference twins."""

from kernels.moe import autotune_cached, cached_choice, cached_moe_mlp, moe_mlp, route

__all__ = ["moe_mlp", "cached_moe_mlp", "route", "autotune_cached", "cached_choice"]

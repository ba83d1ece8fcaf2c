"""MoE kernels: public ops (dispatching to Triton or PyTorch) and their reference twins."""

from kernels.moe import cached_moe_mlp, moe_mlp, route

__all__ = ["moe_mlp", "cached_moe_mlp", "route"]

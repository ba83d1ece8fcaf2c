"""Goal encoders: goal dict {"task": [B] int, "lang"?: [B, D]} -> one goal embedding [B, width].

Two kinds, picked by shape_meta["lang_dim"]:
  task table  (lang_dim == 0)  a learned embedding per task index
  language    (lang_dim > 0)   a sentence embedding -> Linear to width. The embeddings of the task
              instructions live in the buffer `lang_table` [n_tasks, lang_dim], so they are saved in
              every checkpoint and a rollout needs only the task index; training fills the table once
              (`fill_lang_table`). A batch may also carry goal["lang"] directly, which wins.
Goal dropout (training only) zeroes the embedding of a random fraction of the samples.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
from torch import nn


class GoalEncoder(nn.Module):
    def __init__(self, n_tasks: int, lang_dim: int, width: int, dropout: float = 0.0) -> None:
        super().__init__()
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"goal_dropout must be in [0, 1), got {dropout}")
        self.dropout = float(dropout)
        if n_tasks < 1:
            raise ValueError(f"shape_meta['n_tasks'] must be >= 1, got {n_tasks}")
        self.n_tasks, self.lang_dim, self.width = int(n_tasks), int(lang_dim), int(width)
        if self.lang_dim > 0:
            self.register_buffer("lang_table", torch.zeros(self.n_tasks, self.lang_dim))
            self.lang_proj = nn.Linear(self.lang_dim, width)
        else:
            self.task_table = nn.Embedding(self.n_tasks, width)
            nn.init.normal_(self.task_table.weight, std=0.02)

    @classmethod
    def from_shape_meta(cls, shape_meta: dict[str, Any], width: int, dropout: float = 0.0) -> GoalEncoder:
        return cls(int(shape_meta.get("n_tasks", 1)), int(shape_meta.get("lang_dim", 0)), width, dropout)

    def forward(self, goal: dict[str, torch.Tensor]) -> torch.Tensor:
        emb = self.embed(goal)
        if self.training and self.dropout > 0:
            keep = torch.rand(emb.shape[0], 1, device=emb.device) >= self.dropout
            emb = emb * keep.to(emb.dtype)
        return emb

    def embed(self, goal: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.lang_dim > 0:
            lang = goal.get("lang")
            if lang is None:
                lang = self.lang_table[self._task(goal)]
            elif lang.shape[-1] != self.lang_dim:
                raise ValueError(
                    f"goal['lang'] has dim {lang.shape[-1]}, the policy was built for {self.lang_dim}"
                )
            return self.lang_proj(lang.to(self.lang_proj.weight.dtype))
        return self.task_table(self._task(goal))

    @staticmethod
    def _task(goal: dict[str, torch.Tensor]) -> torch.Tensor:
        if "task" not in goal:
            raise KeyError("the goal dict needs 'task': [B] int64 task indices (0 for single-task data)")
        return goal["task"].long()

    @torch.no_grad()
    def set_lang_table(self, table: np.ndarray | torch.Tensor) -> None:
        """Store the instruction embeddings [n_tasks, lang_dim] (row i = task i)."""
        if self.lang_dim == 0:
            raise ValueError("this policy was built without language goals (shape_meta lang_dim = 0)")
        table = torch.as_tensor(np.asarray(table, dtype=np.float32) if not torch.is_tensor(table) else table)
        if tuple(table.shape) != (self.n_tasks, self.lang_dim):
            want = [self.n_tasks, self.lang_dim]
            raise ValueError(f"lang_table must be [n_tasks, lang_dim] = {want}, got {list(table.shape)}")
        self.lang_table.copy_(table.to(self.lang_table))


def fill_lang_table(encoder: GoalEncoder, instructions: list[str],
                    cache_dir: str | os.PathLike | None = None) -> None:
    """Embed the task instructions (one per task, in task order) into the encoder's lang_table."""
    from policies.encoders.language import embed_instructions  # lazy: needs the sentence encoder package

    encoder.set_lang_table(embed_instructions(list(instructions), cache_dir=cache_dir))

"""The env seed ranges: demonstrations use seeds below EVAL_SEED_START, rollout evaluation from it up.

Written once here so that generation (data/generate.py) can refuse demonstration seeds that would
reach the evaluation range, and evaluation (rollouts/options.py: episode i starts from
EVAL_SEED_START + i unless told otherwise) never replays an initial state the policy was trained on.
"""

from __future__ import annotations

EVAL_SEED_START = 1_000_000

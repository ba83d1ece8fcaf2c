"""Compose the real Hydra config with test overrides and train on a tiny synthetic store."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

CONF_DIR = str(Path(__file__).resolve().parents[2] / "conf")

TINY = {
    "mode": ["policy.width=32", "policy.n_layers=1", "policy.n_heads=2", "policy.expert_hidden=32",
             "policy.router_hidden=16", "policy.state_hidden=32", "policy.num_sampling_steps=3"],
    "dit": ["policy.width=32", "policy.n_layers=1", "policy.n_heads=2", "policy.state_hidden=32",
            "policy.num_sampling_steps=3"],
    "cnn": ["policy.down_dims=[16,32]", "policy.n_groups=4", "policy.state_hidden=32", "policy.obs_width=16",
            "policy.goal_width=16", "policy.noise_emb_dim=16", "policy.num_sampling_steps=3"],
}


def compose_cfg(store_path: str, policy: str = "mode", extra: list[str] | None = None) -> dict:
    overrides = [
        f"policy={policy}", "threads=1", "trainer=smoke", "logger=none", f"task.dataset={store_path}",
        "task.obs_keys=[robot0_eef_pos,object]", "task.n_demos=1", "data.batch_size=8",
        "data.val_batch_size=8", "data.val_ratio=0.25", "optim.warmup_steps=2", "policy.horizon=8",
        "policy.n_action_steps=4", *TINY.get(policy, []), *(extra or []),
    ]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return OmegaConf.to_container(cfg, resolve=True)

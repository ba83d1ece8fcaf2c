"""The main job in miniature: generate real Lift demos, smoke-train MoDE, evaluate 2 rollouts with a video."""

from __future__ import annotations

import json

import pytest

from data.generate import generate
from eval_rollouts import evaluate, load_config
from tests.training.helpers import compose_cfg
from train import train


@pytest.mark.slow
def test_generate_train_evaluate_lift(tmp_path):
    store = generate("lift", n_episodes=3, out=str(tmp_path / "lift.zarr"), workers=0, progress=False)
    assert store.n_episodes == 3
    cfg = compose_cfg(store.path, "mode", extra=[
        "task.obs_keys=[robot0_eef_pos,robot0_eef_quat,robot0_gripper_qpos,object-state]",
        # rollouts during training, through the same runner (a short episode, filmed)
        "rollout_eval.every_n_steps=10", "rollout_eval.n_episodes=1", "rollout_eval.workers=1",
        "rollout_eval.video_n=1", "rollout_eval.max_steps=8"])
    run_dir = train(cfg, tmp_path / "run")
    assert len(list((run_dir / "eval" / "step_00000010").glob("*.mp4"))) == 1
    out = tmp_path / "eval"
    metrics = evaluate(load_config([f"checkpoint={run_dir}", "n_episodes=2", "workers=1", "video.n=1",
                                    "logger=none", f"out={out}", "max_steps=16", "progress=false"]))
    info = json.loads((out / "eval_info.json").read_text())
    assert info["aggregate"]["n_episodes"] == 2 and len(info["episodes"]) == 2
    assert {e["seed"] for e in info["episodes"]}.isdisjoint(set(store.episode_seed.tolist()))
    assert all(e["error"] is None for e in info["episodes"])
    lo, hi = info["aggregate"]["success_ci95"]
    assert 0.0 <= lo <= info["aggregate"]["success_rate"] <= hi <= 1.0
    videos = list((out / "videos").glob("ep0000_lift_*.mp4"))
    assert len(videos) == 1 and videos[0].stat().st_size > 1000
    assert metrics["aggregate"]["n_episodes"] == 2

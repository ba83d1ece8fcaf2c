"""RolloutEvalCallback in a tiny Lightning fit: logs eval/success_rate, which ModelCheckpoint ranks by."""

from __future__ import annotations

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from torch import nn

from envs.seeds import EVAL_SEED_START
from rollouts.options import RolloutOptions, VideoOptions
from tests.envs import fake_env
from training.module import PolicyModule
from training.rollout_callback import RolloutEvalCallback

FACTORY = f"{fake_env.__name__}:make_env"


class TinyPolicy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.config = {"n_obs_steps": 1, "n_action_steps": 2}
        self.w = nn.Parameter(torch.zeros(2))
        self.eval_calls = 0

    def predict_action(self, obs, goal):
        assert not self.training  # the callback evaluates in eval mode
        self.eval_calls += 1
        return self.w.expand(goal["task"].shape[0], 2, 2)


class TinyModule(L.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.policy = TinyPolicy()
        self.ema = TinyPolicy()  # stands in for the EMA copy; the callback must use this one

    def eval_weights(self) -> nn.Module:
        return self.ema

    evaluation_weights = PolicyModule.evaluation_weights  # the real choice of weights and of their mode

    def training_step(self, batch, batch_idx):
        return ((self.policy.w - batch[0]) ** 2).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.ones(8, 2), batch_size=2)


def test_callback_logs_success_rate_for_checkpoint_ranking(tmp_path) -> None:
    tasks = [{"name": "fake", "env_spec": {"horizon": 6, "succeed_at": 3, "succeed_seeds": [EVAL_SEED_START]}}]
    rollout_eval = {"every_n_steps": 2, "n_episodes": 2, "workers": 1, "video_n": 1}  # as in conf/config.yaml
    cb = RolloutEvalCallback.from_config(rollout_eval, tasks, range(10), env_factory=FACTORY)
    assert cb.options == RolloutOptions(n_episodes=2, workers=1, env_factory=FACTORY, video=VideoOptions(n=1),
                                        progress=False)
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="eval/success_rate", mode="max",
                           every_n_train_steps=2, save_top_k=1)
    module = TinyModule()
    trainer = L.Trainer(max_steps=4, logger=False, enable_progress_bar=False, enable_model_summary=False,
                        callbacks=[cb, ckpt], default_root_dir=tmp_path, accelerator="cpu")
    trainer.fit(module)
    assert cb.last_metrics["success_rate"] == 0.5 and cb.last_metrics["n_episodes"] == 2
    assert trainer.callback_metrics["eval/success_rate"].item() == 0.5
    assert ckpt.best_model_score is not None and ckpt.best_model_score.item() == 0.5
    assert module.ema.eval_calls > 0 and module.policy.eval_calls == 0
    assert module.ema.training  # put back in the mode it was in
    videos = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.glob("eval/*/*.mp4"))
    assert videos == ["eval/step_00000002/ep0000_fake_success.mp4",
                      "eval/step_00000004/ep0000_fake_success.mp4"]
    assert cb._runner is None  # workers closed at teardown

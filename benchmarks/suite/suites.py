"""The benchmark suites as data: tasks, demos, budgets and policy variants (issue #13).

A run of a suite is one (suite task, policy variant, seed). Everything it does is a command line a user
could type, built from the fields below: the demo store comes from `python -m data.generate ...`,
training from `python train.py <variant> <task> <budget> overrides`, evaluation from
`python eval_rollouts.py ...`. Budgets are passed as command-line overrides. The CPU budgets of
`robosuite-state` and `mt50-state` train each task for its own recipe (`train_steps` in conf/task), so
their MoDE rows measure what `python train.py task=<name>` reaches by itself; a state run takes 30-60
minutes on one core of a 2-core machine with a second run beside it (1-1.5 steps/s at batch 256 for the
default state models, one thread; `train.wall_s` in results.json). The GPU budgets use the published
model sizes (`policy=mode_paper` and matched baselines).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

BUDGETS = ("cpu", "cpu-long", "gpu", "smoke")


@dataclass(frozen=True)
class Budget:
    """What one run of a suite may spend: the same for every policy and seed."""

    steps: int | None  # None: each task's own recipe, `train_steps` in its conf/task/<name>.yaml
    batch_size: int
    eval_episodes: int  # per suite task, spread evenly over its env tasks by eval_rollouts.py
    seeds: tuple[int, ...]
    val_check_interval: int
    eval_workers: int = 2
    demos_per_task: int | None = None  # smoke only: fewer demos than the suite's protocol
    train_overrides: tuple[str, ...] = ()
    eval_overrides: tuple[str, ...] = ()


@dataclass(frozen=True)
class Target:
    """The success a task's recipe should reach with MoDE at its default size, and who reached it."""

    success: float
    source: str


@dataclass(frozen=True)
class SuiteTask:
    """One row of a suite: a task config, the store its demos come from and extra overrides."""

    name: str  # row label: lift, can-10
    train_task: tuple[str, ...]  # train.py overrides that choose the task config: ("task=can",)
    store: str  # store name: tasks with the same name share one store (identical demos)
    generate: tuple[str, ...]  # generator argv after `python -m`, without n_episodes= and out=
    n_demos: int  # episodes in the store
    n_env_tasks: int = 1  # env tasks in the store (what demos_per_task multiplies)
    train_overrides: tuple[str, ...] = ()  # e.g. data.max_train_episodes=10
    eval_overrides: tuple[str, ...] = ()
    target: Target | None = None  # the level the report checks each policy against; None: none known

    def demos(self, budget: Budget) -> int:
        return self.n_demos if budget.demos_per_task is None else budget.demos_per_task * self.n_env_tasks

    def steps(self, budget: Budget) -> int:
        """The budget's steps, or for `steps=None` the task config's recipe (what `python train.py
        task=<name>` trains for by itself: the suite then measures that recipe)."""
        if budget.steps is not None:
            return budget.steps
        from training.hydra_configs import load_task_config

        (name,) = [a.partition("=")[2] for a in self.train_task if a.startswith("task=")]
        return int(load_task_config(name)["train_steps"])


@dataclass(frozen=True)
class Variant:
    """A policy as the suite trains it: `overrides(budget)` gives its train.py overrides."""

    name: str
    overrides: Callable[[str], tuple[str, ...]]


@dataclass(frozen=True)
class Suite:
    name: str
    description: str
    tasks: tuple[SuiteTask, ...]
    budgets: Mapping[str, Budget]
    extras: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # policy -> extra variants it brings
    multitask: bool = False  # one policy over many env tasks: the report adds a per-task heatmap
    variants: Mapping[str, Variant] | None = None  # None: the standard VARIANTS

    def known_variants(self) -> Mapping[str, Variant]:
        return self.variants if self.variants is not None else VARIANTS

    def select(self, policies: Sequence[str]) -> list[Variant]:
        """The variants to run for `policies=`: each named one, then the suite's extras of it."""
        known = self.known_variants()
        names: list[str] = []
        for p in policies:
            if p not in known:
                raise ValueError(f"unknown policy {p!r} for suite {self.name}; choose from {', '.join(known)}")
            for n in (p, *self.extras.get(p, ())):
                if n not in names:
                    names.append(n)
        return [known[n] for n in names]

    def select_tasks(self, names: Sequence[str] | None) -> list[SuiteTask]:
        """The suite's tasks named by `tasks=` (in the suite's order); all of them for None."""
        known = [t.name for t in self.tasks]
        unknown = [n for n in names or () if n not in known]
        if unknown:
            raise ValueError(f"unknown task(s) {unknown} for suite {self.name}; choose from {', '.join(known)}")
        return [t for t in self.tasks if names is None or t.name in names]

    def budget(self, name: str) -> Budget:
        if name not in self.budgets:
            raise ValueError(f"suite {self.name} has no budget {name!r}; choose from {', '.join(self.budgets)}")
        return self.budgets[name]


# --- policy variants --------------------------------------------------------------------------------
def _flat(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in cfg.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def hydra_value(v: Any) -> str:
    """A value as it is typed on a Hydra command line."""
    if isinstance(v, bool):
        return "true" if v else "false"
    if v is None:
        return "null"
    if isinstance(v, list | tuple):
        return "[" + ",".join(hydra_value(x) for x in v) + "]"
    return str(v)


def _preset(name: str) -> dict[str, Any]:
    """conf/policy/<name>.yaml resolved as train.py composes it, without `name`."""
    from training.hydra_configs import load_policy_preset

    policy = load_policy_preset(name)
    policy.pop("name", None)
    return policy


def matched_dit(mode_preset: str, same: str) -> tuple[str, ...]:
    """`policy=dit` plus the overrides that give it MoDE `mode_preset`'s transformer and its active
    (same="active") or total (same="total") parameter count."""
    from policies.dit import DiTConfig, dit_config_matching

    matched = dit_config_matching(_preset(mode_preset), same)
    target = _flat(matched)
    default = _flat(_preset("dit"))
    # mlp_hidden=0 (the default) already means "MoDE's active count with this transformer": leave it out then
    if DiTConfig.from_dict({**matched, "mlp_hidden": 0}).mlp_hidden == target["mlp_hidden"]:
        target["mlp_hidden"] = default["mlp_hidden"]
    changed = [f"policy.{k}={hydra_value(v)}" for k, v in target.items() if k in default and default[k] != v]
    return ("policy=dit", *changed)


CNN_PAPER = ("policy=cnn", "policy.down_dims=[256,512,1024]", "policy.noise_emb_dim=256",
             "policy.image_encoder.base_channels=64")  # Chi et al.'s U-Net size (conf/policy/cnn.yaml)


def _mode(extra: tuple[str, ...] = ()) -> Callable[[str], tuple[str, ...]]:
    return lambda budget: ("policy=mode_paper" if budget == "gpu" else "policy=mode", *extra)


def _dit(same: str) -> Callable[[str], tuple[str, ...]]:
    return lambda budget: matched_dit("mode_paper" if budget == "gpu" else "mode", same)


DRAWN = "policy.sample_routes=true"  # the paper's routes drawn from the router's softmax while training

VARIANTS: dict[str, Variant] = {
    "mode": Variant("mode", _mode()),  # the default: trained on the top-k routing it runs at inference
    "mode-drawn": Variant("mode-drawn", _mode((DRAWN,))),
    "dit": Variant("dit", _dit("active")),  # MoDE's active parameter count (the default DiT)
    "dit-total": Variant("dit-total", _dit("total")),  # MoDE's total parameter count
    "cnn": Variant("cnn", lambda budget: CNN_PAPER if budget == "gpu" else ("policy=cnn",)),
    # The codebook study (mt50-image, the extras of mode-drawn) was measured on drawn-route MoDE, so its
    # variants keep drawn routes: each is compared with mode-drawn, one routing throughout.
    "mode-codebook": Variant("mode-codebook", _mode((DRAWN, "policy.codebook.kind=codebook"))),
    # the codebook with sharper scores: at the default temperature 1 an untrained codebook's lookup is
    # 99.97% of uniform entropy (benchmarks/codebook_init.py), at 0.1 it passes on 76% of what linear does
    "mode-codebook-t0.1": Variant("mode-codebook-t0.1", _mode((DRAWN, "policy.codebook.kind=codebook",
                                                               "policy.codebook.temperature=0.1"))),
    "mode-linear": Variant("mode-linear", _mode((DRAWN, "policy.codebook.kind=linear"))),
    # Denoising Task Routing (policies/routing_dtr.py) in place of the learned router: not an extra of any
    # suite, run it by name (policies=mode-dtr)
    "mode-dtr": Variant("mode-dtr", _mode(("policy.router=dtr",))),
}


# --- suites ---------------------------------------------------------------------------------------
def _generate(task: str, images: bool = False) -> tuple[str, ...]:
    return ("data.generate", f"task={task}", f"images={hydra_value(images)}", "workers=2", "seed=0")


SMOKE = Budget(steps=20, batch_size=32, eval_episodes=2, seeds=(0,), val_check_interval=10, demos_per_task=3,
               train_overrides=("trainer=smoke",), eval_overrides=("max_steps=30",))
SMOKE_MT = dataclasses.replace(SMOKE, demos_per_task=1)


# The levels issue #13 set for the task recipes (MoDE at its default size). Square's is Diffusion Policy's
# state transformer on *human* demos (mean of last checkpoints); ours are scripted, so it is a bar, not a
# like-for-like number. MT50 image: DP3's point-cloud policies, trained one per task.
TARGETS = {
    "lift": Target(1.0, "issue #13"),
    "can": Target(0.96, "issue #13"),
    "square": Target(0.89, "Diffusion Policy, state transformer, human demos"),
    "stack": Target(0.90, "issue #13"),
    "mt50": Target(0.90, "issue #13, 10 demos per task, one policy"),
    "mt50-image": Target(0.731, "DP3, point clouds, one policy per task"),
}


def _robosuite(name: str, store: str, n_demos: int, max_train: int | None = None) -> SuiteTask:
    cap = (f"data.max_train_episodes={max_train}",) if max_train else ()
    return SuiteTask(name, (f"task={store}",), store, _generate(store), n_demos, train_overrides=cap,
                     target=TARGETS.get(name))


def _metaworld(name: str, n_tasks: int, demos_per_task: int, images: bool) -> SuiteTask:
    # conf/task has no mt50_image: images are switched on by overrides, as conf/task/mt10_image.yaml sets them
    task = (f"task={name}", *(("task.images=true", "task.obs_keys=[state,corner2_image]") if images else ()))
    store = f"{name}{'-image' if images else ''}"
    return SuiteTask(name, task, store, _generate(name, images), demos_per_task * n_tasks, n_env_tasks=n_tasks,
                     target=TARGETS.get(store))


def _libero(task: str, n_tasks: int, images: bool) -> SuiteTask:
    # the task configs (conf/task/libero_*.yaml) hold the tasks whose scripted expert qualifies (docs/libero.md)
    from training.hydra_configs import load_task_config

    config = f"{task}_image" if images else task
    tasks = load_task_config(config)["name"]  # registry names: a whole suite, or its qualifying tasks
    store = f"{task}{'-image' if images else ''}"
    return SuiteTask(task, (f"task={config}",), store, _generate(tasks, images), 50 * n_tasks, n_env_tasks=n_tasks)


def _libero_budgets(n_tasks: int, images: bool) -> dict[str, Budget]:
    """LIBERO's protocol: evaluation from the benchmark's init states (episode k of a task starts from init
    state k mod 50), 50 episodes per task from state. With images, two workers rendering both 84x84 cameras
    step 14.7 times a second on an idle 2-core Xeon (benchmarks/results/libero_throughput-cpu.jsonl), so 20
    per task (about 200 steps each, plus the policy's time) keep one evaluation near an hour (docs/libero.md)."""
    per_task = 20 if images else 50
    cpu = (Budget(3000, 64, per_task * n_tasks, (0,), 500) if images
           else Budget(None, 256, per_task * n_tasks, (0,), 500))
    return {"cpu": cpu,
            "gpu": Budget(30000, 256, 50 * n_tasks, (0, 1, 2), 2000, eval_workers=8),
            "smoke": SMOKE_MT}


SUITES: dict[str, Suite] = {
    "robosuite-state": Suite(
        "robosuite-state", "robosuite Lift, Can, Square, Stack from state; 100 scripted demos each",
        tuple(_robosuite(t, t, 100) for t in ("lift", "can", "square", "stack")),
        {"cpu": Budget(None, 256, 50, (0, 1, 2), 500),
         # twice the Can/Square/Stack recipe's steps (tasks=square: what more training gives the hardest task)
         "cpu-long": Budget(10000, 256, 50, (0,), 500),
         "gpu": Budget(30000, 256, 50, (0, 1, 2), 2000, eval_workers=8),
         "smoke": SMOKE}),
    "robosuite-low-data": Suite(
        "robosuite-low-data", "robosuite Can and Square from state with 10 and 25 training demos "
        "(one store of 30 per task: the same 2 validation episodes, nested training sets)",
        tuple(_robosuite(f"{t}-{n}", t, 30, n) for t in ("can", "square") for n in (10, 25)),
        {"cpu": Budget(3000, 256, 50, (0, 1, 2), 500),
         "gpu": Budget(20000, 256, 50, (0, 1, 2), 2000, eval_workers=8),
         "smoke": SMOKE}),
    "mt10-state": Suite(
        "mt10-state", "Meta-World MT10 from state, language goals, one policy; 50 demos per task",
        (_metaworld("mt10", 10, 50, images=False),),
        {"cpu": Budget(5000, 256, 100, (0, 1, 2), 500),
         "gpu": Budget(30000, 256, 100, (0, 1, 2), 2000, eval_workers=8),
         "smoke": SMOKE_MT}, multitask=True),
    "mt50-state": Suite(
        "mt50-state", "Meta-World MT50 from state, language goals, one policy; 10 demos and 10 rollouts "
        "per task", (_metaworld("mt50", 50, 10, images=False),),
        {"cpu": Budget(None, 256, 500, (0, 1, 2), 500),
         # twice the recipe's steps: about 1.5 h of training on one core beside a second run
         "cpu-long": Budget(10000, 256, 500, (0,), 500),
         "gpu": Budget(30000, 256, 500, (0, 1, 2), 2000, eval_workers=8),
         "smoke": SMOKE_MT}, multitask=True),
    "mt50-image": Suite(
        "mt50-image", "Meta-World MT50 from the corner2 camera (84x84) + state, language goals, one policy; "
        "10 demos and 10 rollouts per task; MoDE also with the codebook and its linear control",
        (_metaworld("mt50", 50, 10, images=True),),
        {"cpu": Budget(3000, 64, 500, (0,), 500),
         "gpu": Budget(30000, 256, 500, (0, 1, 2), 2000, eval_workers=8),
         "smoke": dataclasses.replace(SMOKE_MT, batch_size=8)},
        extras={"mode-drawn": ("mode-codebook", "mode-codebook-t0.1", "mode-linear")}, multitask=True),
    "libero-object-state": Suite(
        "libero-object-state", "LIBERO-Object (10 tasks) in the LIBERO simulator from state, language goals, one "
        "policy; 50 scripted demos and 50 rollouts per task from the benchmark's init states",
        (_libero("libero_object", 10, images=False),), _libero_budgets(10, images=False), multitask=True),
    "libero-object-image": Suite(
        "libero-object-image", "LIBERO-Object (10 tasks) from agentview and eye-in-hand (84x84) + robot state, "
        "language goals, one policy; 50 scripted demos and 20 rollouts per task",
        (_libero("libero_object", 10, images=True),), _libero_budgets(10, images=True), multitask=True),
    "libero-spatial-state": Suite(
        "libero-spatial-state", "LIBERO-Spatial from state, the 9 tasks whose scripted expert qualifies (task 8 "
        "does not, docs/libero.md), language goals, one policy; 50 demos and 50 rollouts per task",
        (_libero("libero_spatial", 9, images=False),), _libero_budgets(9, images=False), multitask=True),
}


def get_suite(name: str) -> Suite:
    if name not in SUITES:
        raise ValueError(f"unknown suite {name!r}; choose from {', '.join(SUITES)}")
    return SUITES[name]

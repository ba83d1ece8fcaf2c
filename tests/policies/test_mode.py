import numpy as np
import pytest
import torch

from data.normalize import Normalizer
from policies.base import Policy
from policies.diffusion import SAMPLERS, goal_from_batch
from policies.mode import Attention, MoDEConfig, MoDEPolicy, load_balancing_loss
from tests.policies.policy_batches import batch_for

DA, TO, T, TA = 4, 2, 10, 6
COMMON = {"n_obs_steps": TO, "horizon": T, "n_action_steps": TA, "width": 32, "n_layers": 2, "n_heads": 2,
          "state_hidden": 32, "num_sampling_steps": 4, "image_encoder": {"base_channels": 8, "out_dim": 16}}
MOE = {"expert_hidden": 32, "router_hidden": 16}



def make(name: str = "mode", image: bool = False, lang_dim: int = 0, n_tasks: int = 3, seed: int = 0,
         **overrides) -> Policy:
    rng = np.random.default_rng(0)
    arrays = {"action": rng.uniform(-2, 3, size=(200, DA)).astype(np.float32),
              "pos": rng.normal(size=(200, 5)).astype(np.float32),
              "vel": rng.normal(size=(200, 2)).astype(np.float32)}
    modes = {"action": "limits", "pos": "limits", "vel": "gaussian"}
    obs_meta = {"pos": {"shape": [5], "type": "low_dim"}, "vel": {"shape": [2], "type": "low_dim"}}
    if image:
        arrays["agentview_image"] = np.zeros((1, 24, 24, 3), np.uint8)
        modes["agentview_image"] = "image"
        obs_meta["agentview_image"] = {"shape": [24, 24, 3], "type": "rgb"}
    shape_meta = {"obs": obs_meta, "action": {"shape": [DA]}, "n_tasks": n_tasks, "lang_dim": lang_dim}
    config = {**COMMON, **(MOE if name == "mode" else {}), **overrides}
    torch.manual_seed(seed)
    policy = Policy.build(name, config, shape_meta, Normalizer.fit(arrays, modes))
    # The head starts at zero (D = c_skip x whatever the weights); give it weight so that every other
    # parameter, and every routing decision, shows in the sampled actions.
    torch.nn.init.normal_(policy.net.head.weight, std=0.5)
    return policy



def sample(policy: Policy, batch: dict, seed: int = 0, cached: bool = True) -> torch.Tensor:
    policy.net.expert_cache = cached
    try:
        generator = torch.Generator().manual_seed(seed)
        return policy.predict_action(batch["obs"], goal_from_batch(batch), generator=generator)
    finally:
        policy.net.expert_cache = True


def plan(policy: MoDEPolicy) -> torch.Tensor:
    """The cached routing of the policy's schedule as one tensor [steps, layers, k]."""
    routes = policy.net.plan_routes(policy.edm.sigmas())
    return torch.stack([torch.stack([ids for ids, _ in step]) for step in routes])


# --- shapes -------------------------------------------------------------------------------
@pytest.mark.parametrize("image,lang_dim", [(False, 0), (True, 0), (False, 16), (True, 16)])
def test_shapes_state_image_task_lang(image, lang_dim):
    policy = make(image=image, lang_dim=lang_dim)
    batch = batch_for(policy)
    loss, metrics = policy.compute_loss(batch)
    assert loss.ndim == 0 and torch.isfinite(loss)
    loss.backward()
    moe = policy.net.blocks[0].mlp
    assert moe.w13.grad is not None and moe.router[0].weight.grad is not None
    if image:
        assert policy.obs_encoder.image_encoders["agentview_image"].stem[0].weight.grad is not None
        assert policy.obs_encoder.n_tokens == 2 * TO  # one state group + one camera, To tokens each
    policy.eval()
    action = sample(policy, batch)
    assert action.shape == (3, TA, DA) and torch.isfinite(action).all()


def test_predict_action_returns_the_executed_slice_in_env_units():
    policy = make().eval()
    batch = batch_for(policy)
    goal = goal_from_batch(batch)
    full = policy.edm.sample(policy.net, (3, T, DA), policy.encode(batch["obs"], goal),
                             generator=torch.Generator().manual_seed(0))
    expected = policy.normalizer.unnormalize("action", full)[:, TO - 1 : TO - 1 + TA]
    torch.testing.assert_close(sample(policy, batch), expected)


def test_one_generator_per_row_samples_each_row_as_if_alone():
    """What makes an evaluation's scores independent of batching: a row's actions depend on its own
    generator, not on the other rows of the batch."""
    policy = make().eval()
    batch = batch_for(policy)
    goal = goal_from_batch(batch)
    rows = [policy.predict_action({k: v[i : i + 1] for k, v in batch["obs"].items()},
                                  {k: v[i : i + 1] for k, v in goal.items()},
                                  generator=[torch.Generator().manual_seed(10 + i)]) for i in range(3)]
    together = policy.predict_action(batch["obs"], goal,
                                     generator=[torch.Generator().manual_seed(10 + i) for i in range(3)])
    torch.testing.assert_close(together, torch.cat(rows), rtol=1e-5, atol=1e-5)
    swapped = policy.predict_action(batch["obs"], goal,
                                    generator=[torch.Generator().manual_seed(s) for s in (11, 10, 12)])
    assert not torch.allclose(swapped[:2], together[:2], atol=1e-3)
    with pytest.raises(ValueError, match="one per row"):
        policy.predict_action(batch["obs"], goal, generator=[torch.Generator()])


# --- expert caching ---------------------------------------------------------------------------
@pytest.mark.parametrize("sampler", SAMPLERS)
@pytest.mark.parametrize("shared_expert", [False, True])
def test_cached_sampling_equals_uncached(sampler, shared_expert):
    policy = make(sampler=sampler, shared_expert=shared_expert, num_experts=5, top_k=3).eval()
    batch = batch_for(policy, b=4)
    cached = sample(policy, batch, cached=True)
    torch.testing.assert_close(cached, sample(policy, batch, cached=False), rtol=1e-5, atol=1e-5)
    # control: the comparison notices a plan that is off by one step
    plan_routes = policy.net.plan_routes
    policy.net.plan_routes = lambda sigmas: plan_routes(sigmas)[1:] + plan_routes(sigmas)[:1]
    assert not torch.allclose(sample(policy, batch, cached=True), cached, rtol=1e-5, atol=1e-5)


def test_cached_sampling_skips_the_router():
    policy = make().eval()
    calls = []
    hooks = [m.router.register_forward_hook(lambda *a: calls.append(1)) for m in policy.net.sparse_layers()]
    sample(policy, batch_for(policy), cached=True)
    assert len(calls) == policy.cfg.n_layers  # one batched pass per layer to plan, none while sampling
    calls.clear()
    sample(policy, batch_for(policy), cached=False)
    assert len(calls) == policy.cfg.n_layers * policy.cfg.num_sampling_steps
    for h in hooks:
        h.remove()
    assert policy.net._routes is None  # the table does not outlive the sampling call


def test_planned_routes_are_the_routers_choices():
    policy = make(num_experts=6, top_k=2).eval()
    sigmas = policy.edm.sigmas()
    routes = policy.net.plan_routes(sigmas)
    for step, sigma in enumerate(sigmas[:-1]):
        emb = policy.net.noise_emb(torch.full((1,), np.log(sigma) / 4))
        for layer, moe in enumerate(policy.net.sparse_layers()):
            ids, weights = moe.route(emb)
            assert torch.equal(routes[step][layer][0], ids[0])
            torch.testing.assert_close(routes[step][layer][1], weights[0])


def test_cache_follows_load_state_dict():
    policy, other = make(seed=0).eval(), make(seed=1).eval()
    batch = batch_for(policy)
    before_plan, before = plan(policy), sample(policy, batch)
    policy.load_state_dict(other.state_dict())
    assert not torch.equal(plan(policy), before_plan)  # the routing really changed
    after = sample(policy, batch)
    assert not torch.allclose(after, before)
    torch.testing.assert_close(after, sample(other, batch), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(after, sample(policy, batch, cached=False), rtol=1e-5, atol=1e-5)


def test_cache_follows_an_optimizer_step():
    policy = make().eval()
    batch = batch_for(policy)
    before_plan = plan(policy)
    opt = torch.optim.AdamW(policy.parameters(), lr=1.0)
    for moe in policy.net.sparse_layers():  # push every router towards the expert it used least
        least = int(before_plan[:, 0].flatten().bincount(minlength=4).argmin())
        bias = moe.router[-1].bias
        bias.grad = torch.zeros_like(bias)
        bias.grad[least] = -1.0
    opt.step()
    assert not torch.equal(plan(policy), before_plan)
    uncached = sample(policy, batch, cached=False)
    torch.testing.assert_close(sample(policy, batch), uncached, rtol=1e-5, atol=1e-5)


def test_cache_follows_an_ema_swap_through_param_data():
    """Lightning's WeightAveraging swaps weights with `p.data.copy_`, which bumps no version counter."""
    policy, average = make(seed=0).eval(), make(seed=1).eval()
    batch = batch_for(policy)
    before_plan = plan(policy)
    for p, q in zip(policy.parameters(), average.parameters()):
        p.data.copy_(q.data)
    assert not torch.equal(plan(policy), before_plan)
    torch.testing.assert_close(sample(policy, batch), sample(average, batch), rtol=1e-5, atol=1e-5)


# --- routing losses and metrics ---------------------------------------------------------------
def test_load_balancing_loss_on_known_routings():
    uniform = torch.full((4,), 0.25)
    assert load_balancing_loss(uniform, uniform).item() == pytest.approx(1.0)
    collapsed = torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert load_balancing_loss(collapsed, collapsed).item() == pytest.approx(4.0)
    # top-2 of 4 always onto experts 0 and 1 with probabilities 0.5 / 0.5: 4 * (0.5*0.5 + 0.5*0.5) = 2
    policy = make(lb_weight=0.5, z_loss_weight=0.0)
    for moe in policy.net.sparse_layers():
        last = moe.router[-1]
        torch.nn.init.zeros_(last.weight)
        last.bias.data = torch.tensor([10.0, 10.0, -10.0, -10.0])
    loss, metrics = policy.compute_loss(batch_for(policy, b=6))
    assert metrics["lb_loss"].item() == pytest.approx(2.0, abs=1e-4)
    assert loss.item() == pytest.approx(metrics["diffusion_loss"].item() + 0.5 * 2.0, abs=1e-4)
    usage = policy.expert_usage()
    torch.testing.assert_close(usage, torch.tensor([[0.5, 0.5, 0.0, 0.0]] * 2))
    assert metrics["expert_load/l1e0"].item() == pytest.approx(0.5)
    # z-loss: logsumexp of the logits [10, 10, -10, -10] squared
    z = torch.logsumexp(torch.tensor([10.0, 10.0, -10.0, -10.0]), 0) ** 2
    assert metrics["router_z_loss"].item() == pytest.approx(z.item(), rel=1e-5)


@pytest.mark.parametrize("sample_routes", [True, False])
def test_training_routes_are_drawn_or_the_inference_top_k(sample_routes):
    """sample_routes=true draws each sample's experts from the router's softmax while training;
    false trains on exactly the top-k that inference (and the expert cache) will run."""
    policy = make(sample_routes=sample_routes).train()
    moe = policy.net.sparse_layers()[0]
    emb = policy.net.noise_emb(torch.linspace(-1.5, 1.5, 64))
    torch.manual_seed(0)
    drawn = [moe.route(emb)[0].sort(dim=-1).values for _ in range(4)]
    top_k = moe.router(emb).softmax(-1).topk(moe.top_k, dim=-1).indices.sort(dim=-1).values
    same = all(torch.equal(ids, top_k) for ids in drawn)
    assert same != sample_routes


def test_metrics_are_device_tensors_summing_to_one_per_layer():
    policy = make()
    _, metrics = policy.compute_loss(batch_for(policy, b=8))
    assert all(torch.is_tensor(v) and v.ndim == 0 for v in metrics.values())
    torch.testing.assert_close(policy.expert_usage().sum(dim=1), torch.ones(COMMON["n_layers"]))


def test_one_expert_top1_equals_the_dense_mlp_with_the_same_weights():
    mode = make("mode", num_experts=1, top_k=1, expert_hidden=24).eval()
    dit = make("dit", mlp_hidden=24).eval()
    state = {}
    for key, value in mode.state_dict().items():
        if ".mlp.router." in key:
            continue
        state[key] = value[0] if key.endswith((".mlp.w13", ".mlp.w2")) else value
    dit.load_state_dict(state)
    batch = batch_for(mode)
    torch.manual_seed(0)
    loss_mode, metrics = mode.compute_loss(batch)
    torch.manual_seed(0)
    loss_dit, _ = dit.compute_loss(batch)
    torch.testing.assert_close(metrics["diffusion_loss"], loss_dit, rtol=1e-5, atol=1e-6)
    # with one expert the load-balancing loss is its minimum, 1
    torch.testing.assert_close(loss_mode, loss_dit + mode.cfg.lb_weight, rtol=1e-5, atol=1e-6)
    for cached in (True, False):
        dense = sample(dit, batch)
        torch.testing.assert_close(sample(mode, batch, cached=cached), dense, rtol=1e-5, atol=1e-5)


# --- training, checkpoints, attention --------------------------------------------------------------
def test_tiny_mode_overfits_one_batch():
    """One fixed batch (observations, actions, σ, noise and routing draws all repeated): loss falls >= 10x."""
    policy = make(width=64, n_heads=4, expert_hidden=64)
    torch.nn.init.zeros_(policy.net.head.weight)  # the real initialization
    batch = batch_for(policy, b=8)

    def fixed_draw_loss() -> torch.Tensor:
        torch.manual_seed(123)
        return policy.compute_loss(batch)[0]

    initial = fixed_draw_loss().item()
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-3, weight_decay=0.0)
    for _ in range(150):
        loss = fixed_draw_loss()
        opt.zero_grad()
        loss.backward()
        opt.step()
    final = fixed_draw_loss().item()
    assert final < initial / 10, (initial, final)  # measured: ~1.2 -> ~0.01 (the lb loss floor)


def test_checkpoint_round_trip(tmp_path):
    policy = make(lang_dim=8, image=True)
    policy.set_lang_table(torch.randn(3, 8))  # what training does with the dataset's embeddings
    policy.eval()
    batch = batch_for(policy)
    batch.pop("goal")  # the language comes from the table saved in the checkpoint
    before = sample(policy, batch)
    path = tmp_path / "mode.pt"
    policy.save(path)
    for cls in (Policy, MoDEPolicy):
        loaded = cls.from_checkpoint(path)
        assert isinstance(loaded, MoDEPolicy) and not loaded.training
        torch.testing.assert_close(loaded.goal_encoder.lang_table, policy.goal_encoder.lang_table)
        torch.testing.assert_close(sample(loaded, batch), before)


def test_language_goals_use_the_table_unless_the_batch_brings_embeddings(monkeypatch):
    policy = make(lang_dim=8).eval()
    from policies.encoders import goal as goal_module
    from policies.encoders import language

    monkeypatch.setattr(language, "embed_instructions",
                        lambda texts, cache_dir=None: np.stack([np.full(8, float(len(t))) for t in texts]))
    goal_module.fill_lang_table(policy.goal_encoder, ["a", "bb", "ccc"])
    torch.testing.assert_close(policy.goal_encoder.lang_table[:, 0], torch.tensor([1.0, 2.0, 3.0]))
    task = torch.tensor([2, 0])
    from_table = policy.goal_encoder({"task": task})
    explicit = policy.goal_encoder({"task": task, "lang": torch.full((2, 8), 3.0)})
    torch.testing.assert_close(from_table[0], explicit[0])
    assert not torch.allclose(from_table[1], explicit[1])
    with pytest.raises(ValueError, match="lang_table must be"):
        policy.goal_encoder.set_lang_table(np.zeros((2, 8)))


def test_goal_dropout_zeroes_a_fraction_of_goals_in_training_only():
    policy = make(goal_dropout=0.3)
    task = torch.zeros(2000, dtype=torch.long)
    dropped = (policy.goal_encoder({"task": task}).abs().sum(dim=1) == 0).float().mean().item()
    assert dropped == pytest.approx(0.3, abs=0.04)
    policy.eval()
    assert (policy.goal_encoder({"task": task}).abs().sum(dim=1) > 0).all()


@pytest.mark.parametrize("causal", [False, True])
def test_explicit_attention_equals_sdpa(causal):
    torch.manual_seed(0)
    cfg = MoDEConfig(width=32, n_heads=4, causal=causal, attention="explicit")
    explicit = Attention(cfg, 12)
    sdpa = Attention(MoDEConfig(width=32, n_heads=4, causal=causal, attention="sdpa"), 12)
    sdpa.load_state_dict(explicit.state_dict())
    x = torch.randn(3, 12, 32)
    torch.testing.assert_close(explicit(x), sdpa(x), rtol=1e-5, atol=1e-5)
    if causal:  # the first token sees only itself: changing later tokens leaves it alone
        y = x.clone()
        y[:, 1:] += 1.0
        torch.testing.assert_close(explicit(y)[:, 0], explicit(x)[:, 0])


# --- bad input ----------------------------------------------------------------------------------
def test_bad_input_errors(tmp_path):
    with pytest.raises(ValueError, match=r"top_k \(5\) must be between 1 and num_experts \(4\)"):
        make(top_k=5)
    with pytest.raises(ValueError, match="unknown mode config key.*valid keys:.*num_experts"):
        make(num_expert=4)
    policy = make()
    batch = batch_for(policy)
    del batch["obs"]["vel"]
    with pytest.raises(KeyError, match=r"lacks observation key\(s\) \['vel'\]"):
        policy.compute_loss(batch)
    with pytest.raises(ValueError, match="should be"):
        wrong_dim = {"pos": torch.zeros(3, TO, 4), "vel": torch.zeros(3, TO, 2)}
        policy.compute_loss({**batch_for(policy), "obs": wrong_dim})
    shape_meta = {**policy.shape_meta, "action": {"shape": [DA + 1]}}
    with pytest.raises(ValueError, match="action dimension 5 .* disagrees with the normalizer"):
        Policy.build("mode", {**COMMON, **MOE}, shape_meta, policy.normalizer)
    make("dit").save(tmp_path / "dit.pt")
    with pytest.raises(ValueError, match="holds a 'dit' policy, not a 'mode' policy"):
        MoDEPolicy.from_checkpoint(tmp_path / "dit.pt")

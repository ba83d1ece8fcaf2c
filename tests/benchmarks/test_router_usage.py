import math

import pytest
import torch

from benchmarks.router_usage import router_probs, usage
from tests.policies.test_mode import make


def test_usage_of_known_router_probabilities():
    probs = torch.tensor([[[0.6, 0.3, 0.06, 0.04], [0.04, 0.06, 0.3, 0.6]], [[0.25] * 4, [0.25] * 4]])
    specialised, uniform = usage(probs, k=2)
    h = -sum(p * math.log(p) for p in (0.6, 0.3, 0.06, 0.04)) / math.log(4)
    assert specialised["entropy_ratio"] == pytest.approx(h, rel=1e-5)
    assert specialised["top1_weight"] == pytest.approx(0.6 / 0.9, rel=1e-5)
    assert specialised["distinct_sets"] == 2  # {0, 1} at the first σ, {2, 3} at the second
    assert uniform["entropy_ratio"] == pytest.approx(1.0) and uniform["top1_weight"] == pytest.approx(0.5)


def test_router_probs_cover_the_schedule_and_follow_the_router():
    policy = make().eval()
    probs = router_probs(policy)
    n_sigmas = sum(s > 0 for s in policy.edm.sigmas())
    assert probs.shape == (2, n_sigmas, 4)  # layers, σ of the schedule, experts
    torch.testing.assert_close(probs.sum(dim=-1), torch.ones(2, n_sigmas))
    for moe in policy.net.sparse_layers():  # a router that always prefers experts 0 and 1
        torch.nn.init.zeros_(moe.router[-1].weight)
        moe.router[-1].bias.data = torch.tensor([5.0, 4.0, -5.0, -5.0])
    layer = usage(router_probs(policy), k=2)[0]
    assert layer["distinct_sets"] == 1 and layer["entropy_ratio"] < 0.5
    assert layer["top1_weight"] == pytest.approx(math.e / (math.e + 1), rel=1e-4)

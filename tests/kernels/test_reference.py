"""The reference twins are the specification: check them against first principles."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from kernels import route
from kernels.reference import moe_mlp_reference


def test_moe_mlp_reference_is_the_weighted_sum_of_swiglu_experts():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 6, generator=gen, dtype=torch.float64)
    w13 = torch.randn(3, 10, 6, generator=gen, dtype=torch.float64)
    w2 = torch.randn(3, 6, 5, generator=gen, dtype=torch.float64)
    ids = torch.tensor([[0, 2], [1, 0], [2, 1]])
    weights = torch.tensor([[0.25, 0.75], [0.5, 0.5], [0.9, 0.1]], dtype=torch.float64)
    out = moe_mlp_reference(x, w13, w2, ids, weights)
    for b in range(3):
        want = torch.zeros(4, 6, dtype=torch.float64)
        for j in range(2):
            e = int(ids[b, j])
            gate, up = x[b] @ w13[e, :5].t(), x[b] @ w13[e, 5:].t()
            want += weights[b, j] * ((gate * torch.sigmoid(gate)) * up) @ w2[e].t()
        torch.testing.assert_close(out[b], want)


def test_route_eval_is_renormalized_top_k_with_load_stats():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.0, 3.0, 1.0, 2.0]])
    ids, weights, stats = route(logits, 2, training=False)
    assert ids.tolist() == [[0, 1], [1, 3]]
    probs = F.softmax(logits, dim=-1)
    top = probs.gather(1, ids)
    torch.testing.assert_close(weights, top / top.sum(1, keepdim=True))
    torch.testing.assert_close(stats["probs_mean"], probs.mean(0))
    torch.testing.assert_close(stats["load"], torch.tensor([0.25, 0.5, 0.0, 0.25]))


def test_route_training_samples_distinct_experts_reproducibly():
    logits = torch.randn(64, 6)
    ids_a, w_a, _ = route(logits, 3, training=True, generator=torch.Generator().manual_seed(5))
    ids_b, w_b, _ = route(logits, 3, training=True, generator=torch.Generator().manual_seed(5))
    assert torch.equal(ids_a, ids_b) and torch.equal(w_a, w_b)
    assert all(len(set(row)) == 3 for row in ids_a.tolist())
    torch.testing.assert_close(w_a.sum(1), torch.ones(64))
    assert not torch.equal(ids_a, route(logits, 3)[0])  # sampling differs from deterministic top-k


def test_route_rejects_bad_k():
    with pytest.raises(ValueError, match="top_k"):
        route(torch.zeros(2, 4), 5)

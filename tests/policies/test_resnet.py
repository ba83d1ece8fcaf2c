import pytest
import torch
from torch import nn

from policies.encoders.resnet import ResNetImageEncoder, SpatialSoftmax, random_shift


def _images(n: int = 3, size: int = 84) -> torch.Tensor:
    torch.manual_seed(0)
    return torch.rand(n, 3, size, size) * 2 - 1


@pytest.mark.parametrize("pool", ["avg", "spatial_softmax"])
def test_shapes_both_poolings(pool):
    enc = ResNetImageEncoder(base_channels=8, out_dim=24, pool=pool).eval()
    out = enc(_images())
    assert out.shape == (3, 24)
    assert torch.isfinite(out).all()
    # a non-square, smaller image still works (the stem and stages are size-agnostic)
    assert enc(torch.rand(2, 3, 64, 48)).shape == (2, 24)


def test_groupnorm_only_no_batchnorm():
    enc = ResNetImageEncoder(base_channels=8, pool="spatial_softmax", film_dim=4)
    kinds = {type(m) for m in enc.modules()}
    assert nn.GroupNorm in kinds
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in enc.modules())
    # ResNet-18: 8 residual blocks, widths base * (1, 2, 4, 8)
    assert len(enc.blocks) == 8 and enc.feature_channels == 64


def test_per_sample_independence_in_eval():
    """GroupNorm (unlike BatchNorm) makes each sample's output independent of the rest of the batch."""
    enc = ResNetImageEncoder(base_channels=8, out_dim=16).eval()
    x = _images(4)
    torch.testing.assert_close(enc(x)[:1], enc(x[:1]), rtol=1e-4, atol=1e-5)


def test_film_changes_output_and_requires_goal():
    enc = ResNetImageEncoder(base_channels=8, out_dim=16, film_dim=6).eval()
    x = _images(2)
    g1, g2 = torch.zeros(2, 6), torch.ones(2, 6)
    out1, out2 = enc(x, g1), enc(x, g2)
    assert not torch.allclose(out1, out2, atol=1e-4)
    torch.testing.assert_close(enc(x, g1), out1)  # same goal -> same output
    with pytest.raises(ValueError, match="goal_emb"):
        enc(x)
    with pytest.raises(ValueError, match="goal_emb"):
        enc(x, torch.zeros(2, 5))
    # without FiLM the goal is ignored
    plain = ResNetImageEncoder(base_channels=8, out_dim=16).eval()
    torch.testing.assert_close(plain(x, g1), plain(x, g2))


def test_random_shift_only_in_training():
    enc = ResNetImageEncoder(base_channels=8, out_dim=16, random_shift=4)
    x = _images(4)
    enc.eval()
    torch.testing.assert_close(enc(x), enc(x))
    enc.train()
    torch.manual_seed(1)
    a = enc(x)
    torch.manual_seed(2)
    b = enc(x)
    assert not torch.allclose(a, b, atol=1e-5)
    # shift 0 = off: training mode is deterministic too
    off = ResNetImageEncoder(base_channels=8, out_dim=16, random_shift=0).train()
    torch.testing.assert_close(off(x), off(x))


def test_random_shift_is_a_pixel_translation():
    x = torch.arange(2 * 3 * 10 * 10, dtype=torch.float32).reshape(2, 3, 10, 10)
    torch.manual_seed(0)
    y = random_shift(x, pad=2)
    assert y.shape == x.shape
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2), mode="replicate")
    for i in range(2):
        # each output equals one 10x10 window of the padded image (independent shift per sample)
        hits = [
            (dy, dx)
            for dy in range(5)
            for dx in range(5)
            if torch.equal(padded[i, :, dy : dy + 10, dx : dx + 10], y[i])
        ]
        assert len(hits) == 1


def test_spatial_softmax_expected_coordinates():
    ss = SpatialSoftmax(channels=1, num_keypoints=1, temperature=1.0, learnable_temperature=False)
    with torch.no_grad():
        ss.keypoints.weight.fill_(1.0)
        ss.keypoints.bias.zero_()
    feat = torch.full((1, 1, 5, 7), -1e4)
    feat[0, 0, 4, 0] = 0.0  # all mass at the bottom-left pixel: x = -1, y = +1
    torch.testing.assert_close(ss(feat), torch.tensor([[-1.0, 1.0]]))
    uniform = ss(torch.zeros(1, 1, 5, 7))
    torch.testing.assert_close(uniform, torch.zeros(1, 2), atol=1e-6, rtol=0)


def test_bad_config_raises():
    with pytest.raises(ValueError, match="pooling"):
        ResNetImageEncoder(pool="max")
    with pytest.raises(ValueError, match="random_shift"):
        ResNetImageEncoder(random_shift=-1)


def test_gradients_reach_stem_and_film():
    enc = ResNetImageEncoder(base_channels=8, out_dim=8, film_dim=4, pool="spatial_softmax")
    enc(_images(2), torch.randn(2, 4)).pow(2).sum().backward()
    assert enc.stem[0].weight.grad.abs().sum() > 0
    assert enc.blocks[0].film.proj.weight.grad.abs().sum() > 0

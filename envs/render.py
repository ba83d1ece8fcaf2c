"""Headless rendering, chosen in one place: EGL (NVIDIA's on a GPU, else Mesa's on the CPU), else OSMesa.

Call `setup_rendering()` before anything imports mujoco (the backend is read at import). The choice is
written to MUJOCO_GL, which spawned workers inherit, so a process tree chooses once.

Mesa's EGL renders on the CPU through the same llvmpipe rasteriser as OSMesa, at the same speed
(benchmarks/render_backends.py), but OSMesa crashes or hangs in a process that builds and frees many
render contexts (a test session, a notebook, training with rollout evaluation); EGL does not. So EGL is
the default wherever it initialises, and OSMesa the fallback. Installing both on Debian/Ubuntu:
scripts/ensure_headless_gl.sh (run by `make install`).
"""

from __future__ import annotations

import ctypes.util
import importlib
import importlib.util
import os
import shutil
import subprocess
import sys

PACKAGES = "libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0 libosmesa6"  # scripts/ensure_headless_gl.sh's
EGL_PROBE_TIMEOUT_S = 60.0
# What mujoco does with MUJOCO_GL=egl: a context on the first EGL device, made current, then freed.
_EGL_PROBE = ("import os; os.environ['MUJOCO_GL'] = os.environ['PYOPENGL_PLATFORM'] = 'egl'; "
              "from mujoco.egl import GLContext; c = GLContext(16, 16); c.make_current(); c.free()")


class RenderingUnavailable(RuntimeError):
    pass


def _gpu_present() -> bool:
    return shutil.which("nvidia-smi") is not None or os.path.exists("/dev/nvidia0")


def _mesa_egl_installed() -> bool:
    return ctypes.util.find_library("EGL") is not None and ctypes.util.find_library("EGL_mesa") is not None


def _egl_initialises() -> bool:
    """Whether an EGL context can be made here, tried in a child process (~1 s, once per process tree):
    a driver that is installed but broken can crash or hang whoever tries, and this process must not."""
    env = {**os.environ, "MUJOCO_GL": "egl", "PYOPENGL_PLATFORM": "egl"}
    try:
        done = subprocess.run([sys.executable, "-c", _EGL_PROBE], env=env, capture_output=True,
                              timeout=EGL_PROBE_TIMEOUT_S)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def choose_backend() -> str:
    """The MuJoCo GL backend: the user's MUJOCO_GL if set; else egl on an NVIDIA GPU, or Mesa's EGL where it
    is installed and initialises; else osmesa."""
    if os.environ.get("MUJOCO_GL"):
        return os.environ["MUJOCO_GL"]
    if _gpu_present() or (_mesa_egl_installed() and _egl_initialises()):
        return "egl"
    return "osmesa"


def _load_triton_before_mesa() -> None:
    """Load Triton's native library (if installed) before Mesa (OSMesa, or EGL through Mesa's llvmpipe).

    PyOpenGL loads OSMesa with RTLD_GLOBAL, which puts llvmpipe's LLVM symbols in the global
    scope; Triton's libtriton carries its own LLVM and segfaults in its static initialisers when
    loaded after that (e.g. `import lightning` in a process that already rendered). Loaded first,
    both coexist. Costs ~0.4 s once per process.
    """
    if "triton._C.libtriton" in sys.modules or importlib.util.find_spec("triton") is None:
        return
    try:
        importlib.import_module("triton._C.libtriton")
    except ImportError:  # a broken Triton install is the kernels' problem, not rendering's
        pass


def setup_rendering() -> str:
    """Set MUJOCO_GL / PYOPENGL_PLATFORM for this process and its children; return the backend."""
    backend = choose_backend()
    if backend == "osmesa" and ctypes.util.find_library("OSMesa") is None:
        raise RenderingUnavailable(
            "no headless OpenGL: Mesa's EGL does not work here and OSMesa is missing. Install the Debian "
            f"packages (sudo apt-get install -y {PACKAGES}, or bash scripts/ensure_headless_gl.sh as root)."
        )
    os.environ["MUJOCO_GL"] = backend
    os.environ["PYOPENGL_PLATFORM"] = backend
    if backend in ("osmesa", "egl"):  # Mesa's EGL on a CPU brings the same llvmpipe; harmless on NVIDIA's
        _load_triton_before_mesa()
    # llvmpipe (software GL) spawns one thread per core per context; with several worker
    # processes on a small machine that oversubscribes the CPU.
    os.environ.setdefault("LP_NUM_THREADS", "0")
    return backend


# Render quality. "fast" is for learning from pixels: without shadows, reflections and
# multisampling a software (llvmpipe) renderer draws an 84x84 frame about ten times faster.
# "full" keeps the model's own settings, for videos people look at.
RENDER_QUALITIES = ("fast", "full")
FAST_SHADOW_SIZE = 512


def _check_quality(quality: str) -> None:
    if quality not in RENDER_QUALITIES:
        raise ValueError(f"render quality must be one of {RENDER_QUALITIES}, got {quality!r}")


def set_scene_quality(scene, quality: str) -> None:
    """Turn shadows and reflections of a mujoco.MjvScene off ("fast") or on ("full")."""
    import mujoco

    _check_quality(quality)
    on = int(quality == "full")
    scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = on
    scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = on


def make_render_context(model, quality: str, width: int = 0, height: int = 0, full_settings=None):
    """A mujoco.MjrContext for `model` at `quality`, in the GL context that is current.

    The shadow-map size, multisampling and offscreen size are read from the model when the
    context is made, so they are set for the call and restored after it. `full_settings`
    (shadowsize, offsamples) are the model's original values, needed when the model was
    already switched to fast settings.
    """
    import mujoco

    _check_quality(quality)
    q, g = model.vis.quality, model.vis.global_
    saved = (q.shadowsize, q.offsamples, g.offwidth, g.offheight)
    if quality == "fast":
        q.shadowsize, q.offsamples = FAST_SHADOW_SIZE, 0
    elif full_settings is not None:
        q.shadowsize, q.offsamples = full_settings
    g.offwidth, g.offheight = max(width, g.offwidth), max(height, g.offheight)
    try:
        return mujoco.MjrContext(model, mujoco.mjtFontScale.mjFONTSCALE_150)
    finally:
        q.shadowsize, q.offsamples, g.offwidth, g.offheight = saved


class FrameRenderer:
    """Draws upright RGB frames of a MuJoCo model from its fixed cameras at one quality.

    It owns its scene and MjrContext but no GL context: create and use it while the GL
    context of the simulator is current, so it can coexist with the simulator's own renderer.
    """

    def __init__(self, model, quality: str, width: int, height: int, option=None, full_settings=None):
        import mujoco

        self._model = model
        self.quality = quality
        self._scene = mujoco.MjvScene(model, maxgeom=10000)
        set_scene_quality(self._scene, quality)
        self._option = option if option is not None else mujoco.MjvOption()
        self._camera = mujoco.MjvCamera()
        self._camera.type = mujoco.mjtCamera.mjCAMERA_FIXED
        self._context = make_render_context(model, quality, width, height, full_settings)

    def render(self, data, camera_id: int, width: int, height: int):
        import mujoco
        import numpy as np

        if width > self._context.offWidth or height > self._context.offHeight:
            raise ValueError(
                f"frame {width}x{height} exceeds this renderer's buffer "
                f"{self._context.offWidth}x{self._context.offHeight}"
            )
        mujoco.mjr_setBuffer(mujoco.mjtFramebuffer.mjFB_OFFSCREEN, self._context)
        self._camera.fixedcamid = camera_id
        mujoco.mjv_updateScene(
            self._model, data, self._option, None, self._camera, mujoco.mjtCatBit.mjCAT_ALL, self._scene
        )
        viewport = mujoco.MjrRect(0, 0, width, height)
        mujoco.mjr_render(viewport, self._scene, self._context)
        rgb = np.empty((height, width, 3), dtype=np.uint8)
        mujoco.mjr_readPixels(rgb, None, viewport, self._context)
        return np.ascontiguousarray(rgb[::-1])  # OpenGL rows run bottom-up

    def close(self) -> None:
        self._context.free()

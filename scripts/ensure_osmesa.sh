#!/usr/bin/env bash
# Headless MuJoCo rendering on CPU needs OSMesa (Debian package libosmesa6). Install it when
# missing and possible; otherwise say what to do. A GPU machine can use EGL instead (MUJOCO_GL=egl).
set -u
# Mesa's EGL (libegl-mesa0) renders on the CPU too; the test suite uses it (tests/conftest.py).
if ldconfig -p 2>/dev/null | grep -q 'libOSMesa\.so' && ldconfig -p 2>/dev/null | grep -q 'libEGL_mesa\.so'; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing libosmesa6 and libegl-mesa0 for headless rendering..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libosmesa6 libegl1 libegl-mesa0 \
    >/dev/null) && exit 0
fi
echo "WARNING: OSMesa (libosmesa6) is missing and could not be installed automatically." >&2
echo "         Image observations and videos need it: sudo apt-get install -y libosmesa6" >&2
echo "         (or set MUJOCO_GL=egl on a machine with a GPU). State-only work still runs." >&2
exit 0

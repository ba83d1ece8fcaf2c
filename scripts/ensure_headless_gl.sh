#!/usr/bin/env bash
# Headless MuJoCo rendering on a CPU: Mesa's EGL (the default wherever it works; envs/render.py) and
# OSMesa (the fallback). Installs the Debian packages when they are missing and this runs as root with
# apt-get; otherwise says what to install. A machine with an NVIDIA GPU renders through its own EGL.
set -u
PACKAGES="libegl1 libegl-mesa0 libgl1-mesa-dri libopengl0 libosmesa6"
have() { ldconfig -p 2>/dev/null | grep -q "$1"; }
if have 'libEGL\.so\.1 ' && have 'libEGL_mesa\.so' && have 'libOpenGL\.so\.0' && have 'libOSMesa\.so'; then
  exit 0
fi
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing Mesa's EGL and OSMesa for headless rendering ($PACKAGES)..."
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $PACKAGES >/dev/null) && exit 0
fi
echo "WARNING: headless OpenGL (Mesa's EGL or OSMesa) is missing and could not be installed automatically." >&2
echo "         Image observations and videos need it: sudo apt-get install -y $PACKAGES" >&2
echo "         State-only work still runs." >&2
exit 0

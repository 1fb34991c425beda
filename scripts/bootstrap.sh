#!/usr/bin/env bash
# Create or reuse the project's virtual environment and install what napari-sgnet needs.
#
#   scripts/bootstrap.sh            # runtime + napari (PyQt5) + test tools
#
# Order matters: torch==2.13.0 (a CPU build) is installed BEFORE anything that depends on
# torch, so that pip never pulls a multi-GB CUDA build. The system packages napari needs to
# render under Xvfb (xvfb, xauth, the xcb libraries) are installed with apt when missing.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${VENV:-.venv}
PY=${PYTHON:-python3}
TORCH_SPEC=${TORCH_SPEC:-torch==2.13.0}

# System packages for a real napari window under Xvfb (Debian/Ubuntu).
apt_pkgs=(xvfb xauth libxkbcommon-x11-0 libxcb-icccm4 libxcb-image0 libxcb-keysyms1 libxcb-randr0
          libxcb-render-util0 libxcb-xinerama0 libxcb-xfixes0 libxcb-shape0 libxcb-cursor0 libxcb-xkb1
          libegl1 libgl1 libfontconfig1 libdbus-1-3)
need_apt=0
command -v Xvfb >/dev/null 2>&1 || need_apt=1
if command -v dpkg-query >/dev/null 2>&1; then
  for p in "${apt_pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_apt=1
  done
fi
if [ "$need_apt" = 1 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
    echo ">> installing system packages for napari under Xvfb: ${apt_pkgs[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${apt_pkgs[@]}" >/dev/null
  else
    echo ">> warning: no apt-get; install Xvfb and the xcb libraries yourself for GUI tests" >&2
  fi
fi

stamp="$VENV/.napari-sgnet-installed"
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt scripts/bootstrap.sh ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -m pip install -q "$TORCH_SPEC" 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -c "import torch" || { echo "torch did not install" >&2; exit 1; }
"$VENV/bin/python" -m pip install -q -e ".[testing]" 2>&1 | grep -v "^WARNING: Location" || true
"$VENV/bin/python" -c "import napari_sgnet, napari, torch, zarr, dask" || { echo "install failed" >&2; exit 1; }
touch "$stamp"

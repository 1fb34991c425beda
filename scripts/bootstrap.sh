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

# System packages (scripts/apt-packages.txt; scripts/check_apt_deps.sh checks the list covers
# PyQt5's Qt xcb plugin): python3-venv, pip, make and git for the set-up itself, then Xvfb,
# libglib2.0-0 and the xcb/GL/font libraries a napari window needs. NO_APT=1 skips apt.
resolve() {  # "a|b" -> the first alternative apt knows
  local alt
  IFS='|' read -ra alts <<<"$1"
  for alt in "${alts[@]}"; do
    if apt-cache show "$alt" >/dev/null 2>&1; then echo "$alt"; return; fi
  done
  echo "${alts[0]}"
}
mapfile -t apt_lines < <(grep -v '^\s*#' scripts/apt-packages.txt | grep -v '^\s*$')
need_apt=0
command -v Xvfb >/dev/null 2>&1 || need_apt=1
apt_pkgs=()
if command -v dpkg-query >/dev/null 2>&1 && command -v apt-cache >/dev/null 2>&1; then
  for line in "${apt_lines[@]}"; do
    p=$(resolve "$line")
    apt_pkgs+=("$p")
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need_apt=1
  done
fi
if [ "$need_apt" = 1 ] && [ "${NO_APT:-0}" != 1 ]; then
  if command -v apt-get >/dev/null 2>&1; then
    SUDO=""
    if [ "$(id -u)" -ne 0 ]; then
      command -v sudo >/dev/null 2>&1 || {
        echo ">> error: system packages are missing and there is no sudo; as root run:" >&2
        echo "   apt-get install -y ${apt_pkgs[*]}" >&2
        exit 1
      }
      SUDO="sudo"
    fi
    echo ">> installing system packages: ${apt_pkgs[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${apt_pkgs[@]}"
  else
    echo ">> warning: no apt-get; install the packages in scripts/apt-packages.txt yourself" >&2
  fi
fi
for tool in make git; do
  command -v "$tool" >/dev/null 2>&1 || echo ">> warning: '$tool' is not installed (apt-get install $tool)" >&2
done
"$PY" -c 'import venv, ensurepip' 2>/dev/null || {
  echo ">> error: $PY has no venv/ensurepip module; install python3-venv (apt-get install python3-venv)" >&2
  exit 1
}

# pip's output is filtered of its "Location" warnings only; a failing pip fails the set-up.
pip_install() {
  local rc
  set +e
  "$VENV/bin/python" -m pip install -q "$@" 2>&1 | grep -v "^WARNING: Location"
  rc=${PIPESTATUS[0]}
  set -e
  if [ "$rc" -ne 0 ]; then
    echo ">> error: pip install $* failed (exit $rc); see the messages above" >&2
    exit "$rc"
  fi
}

stamp="$VENV/.napari-sgnet-installed"
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ] && [ "$stamp" -nt scripts/bootstrap.sh ]; then
  exit 0
fi
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
pip_install --upgrade pip
# TORCH_SPEC picks the build: the default is the CPU wheel index's torch; for CUDA set e.g.
# TORCH_INDEX=https://download.pytorch.org/whl/cu126 (see the README, "Choosing a torch build").
if [ -n "${TORCH_INDEX:-}" ]; then
  pip_install --index-url "$TORCH_INDEX" "$TORCH_SPEC"
else
  pip_install "$TORCH_SPEC"
fi
"$VENV/bin/python" -c "import torch" || { echo "torch did not install" >&2; exit 1; }
pip_install -e ".[testing]"
"$VENV/bin/python" -c "import napari_sgnet, napari, torch, zarr, dask" || { echo "install failed" >&2; exit 1; }
touch "$stamp"
echo ">> ready: $VENV/bin/napari-sgnet (or 'source $VENV/bin/activate' to put it on PATH)"

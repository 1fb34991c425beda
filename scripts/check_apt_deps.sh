#!/usr/bin/env bash
# Check that scripts/apt-packages.txt covers what PyQt5's Qt xcb platform plugin needs.
#
#   scripts/check_apt_deps.sh        # exit 0: covered; 1: something missing (listed)
#
# Two checks, both against the closure of the list (the packages plus everything they depend
# on, from `apt-cache depends --recurse`):
#  1. the X11/xcb/GL/glib/font/D-Bus libraries Debian's own Qt 5 GUI package (libqt5gui5,
#     which ships the same xcb plugin) depends on, from `apt-cache depends`;
#  2. when the virtual environment has PyQt5: every library `ldd` finds for the wheel's
#     libqxcb.so and Qt libraries, mapped to its package with `dpkg -S` ("not found" fails).
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${VENV:-.venv}
command -v apt-cache >/dev/null 2>&1 || { echo "check_apt_deps: no apt-cache (not Debian/Ubuntu); skipped"; exit 0; }

resolve() {  # "a|b" -> the first alternative apt knows
  local alt
  IFS='|' read -ra alts <<<"$1"
  for alt in "${alts[@]}"; do
    if apt-cache show "$alt" >/dev/null 2>&1; then echo "$alt"; return; fi
  done
  echo "${alts[0]}"
}
mapfile -t listed < <(grep -v '^\s*#' scripts/apt-packages.txt | grep -v '^\s*$' | while read -r p; do resolve "$p"; done)
closure=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts --no-breaks \
  --no-replaces --no-enhances "${listed[@]}" 2>/dev/null | grep -v '^ ' | sed 's/[<>]//g; s/:.*//' | sort -u)
in_closure() { grep -qx "$1" <<<"$closure"; }

missing=()
qtgui=$(apt-cache pkgnames libqt5gui5 2>/dev/null | sort | head -1)
if [ -n "$qtgui" ]; then
  while read -r dep; do
    in_closure "$dep" || missing+=("$dep (needed by Debian's $qtgui)")
  done < <(apt-cache depends "$qtgui" | awk '$1 ~ /Depends:/ {print $2}' | sed 's/[<>]//g' \
           | grep -E '^(libx|libgl|libegl|libglib|libfontconfig|libfreetype|libdbus|libsm|libice)' | sort -u)
else
  echo "check_apt_deps: apt knows no libqt5gui5; check 1 skipped"
fi

qt="$VENV/lib/python3*/site-packages/PyQt5/Qt5"
plugin=$(ls $qt/plugins/platforms/libqxcb.so 2>/dev/null | head -1 || true)
if [ -n "$plugin" ]; then
  qtlib=$(dirname "$(dirname "$(dirname "$plugin")")")/lib
  libs=$(for f in "$plugin" "$qtlib"/libQt5XcbQpa.so.5 "$qtlib"/libQt5Gui.so.5 "$qtlib"/libQt5DBus.so.5 "$qtlib"/libQt5Core.so.5; do
           [ -e "$f" ] && LD_LIBRARY_PATH="$qtlib" ldd "$f"; done | sort -u)
  while read -r so; do missing+=("$so (not found by ldd for $plugin)"); done \
    < <(awk '/not found/ {print $1}' <<<"$libs" | sort -u)
  while read -r path; do
    [ -e "$path" ] || continue
    pkg=$(dpkg -S "$(readlink -f "$path")" 2>/dev/null | head -1 | cut -d: -f1 || true)
    [ -z "$pkg" ] && pkg=$(dpkg -S "$path" 2>/dev/null | head -1 | cut -d: -f1 || true)
    [ -z "$pkg" ] && continue
    in_closure "$pkg" || missing+=("$pkg (provides $(basename "$path") for the Qt xcb plugin)")
  done < <(awk '$3 ~ /^\// && $3 !~ /Qt5/ {print $3}' <<<"$libs" | sort -u)
else
  echo "check_apt_deps: no PyQt5 in $VENV; check 2 (ldd) skipped"
fi

if [ ${#missing[@]} -gt 0 ]; then
  echo "scripts/apt-packages.txt misses:" >&2
  printf '  %s\n' "${missing[@]}" | sort -u >&2
  exit 1
fi
echo "check_apt_deps: scripts/apt-packages.txt (${#listed[@]} packages) covers the Qt xcb plugin's libraries"

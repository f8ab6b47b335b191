#!/usr/bin/env bash
# One-time set-up on a fresh Debian/Ubuntu machine: the system libraries a headless napari
# (Qt 6 on Xvfb) needs, then this plugin with its test extras. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES="xvfb xauth libxcb-icccm4 libxcb-keysyms1 libxcb-xinerama0 libxcb-cursor0
libxkbcommon-x11-0 libegl1 libgl1 libxcb-shape0 libxcb-randr0 libxcb-render-util0 libxcb-image0
libxcb-xkb1 libdbus-1-3 libfontconfig1"

if command -v apt-get >/dev/null 2>&1; then
  # shellcheck disable=SC2086
  if ! dpkg -s $APT_PACKAGES >/dev/null 2>&1; then
    SUDO=""
    [ "$(id -u)" = 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    # shellcheck disable=SC2086
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
      $APT_PACKAGES >/dev/null
  fi
else
  echo "setup: no apt-get here; install Xvfb and the Qt xcb libraries with your package manager" >&2
fi

# torch first, pinned to the CPU build that the development machines keep on disk; with a torch
# already installed (a CUDA or MPS build, say) nothing is replaced.
python -c "import torch" 2>/dev/null || python -m pip install --quiet --disable-pip-version-check "torch==2.13.0"
python -m pip install --quiet --disable-pip-version-check -e ".[test]"

#!/usr/bin/env bash
# Create ./.venv with everything vldac_lightning needs (idempotent; re-runs only when
# pyproject.toml changed). CPU by default: torch is pinned to the 2.13.0 CPU wheel so pip never
# pulls multi-GB CUDA builds. GPU users: set VLDAC_TORCH_SPEC, e.g.
#   VLDAC_TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128" bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
VENV=${VLDAC_VENV:-.venv}
TORCH_SPEC=${VLDAC_TORCH_SPEC:-torch==2.13.0}
EXTRAS=${VLDAC_EXTRAS:-dev}
# env=alfworld works out of the box: the alfworld extra is part of the default install. Installing
# it compiles ALFWorld's planner (fast-downward-textworld, ≈ 4-5 min on 2 cores) and pulls spaCy.
[ -n "${VLDAC_EXTRAS:-}" ] || EXTRAS="$EXTRAS,alfworld"
# MiniWorld is in the default install: its tests run in CI (headless GL packages below).
[ -n "${VLDAC_EXTRAS:-}" ] || EXTRAS="$EXTRAS,miniworld"
# MiniWorld renders with OpenGL; headless that is EGL + Mesa's software renderer (Debian/Ubuntu
# packages). Checked on every run (cheap); installed only when missing and we are root.
GL_PKGS="libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libglu1-mesa"
if command -v dpkg >/dev/null 2>&1; then
  missing=$(for p in $GL_PKGS; do dpkg -s "$p" >/dev/null 2>&1 || printf '%s ' "$p"; done)
  if [ -n "$missing" ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "[setup] installing headless OpenGL for MiniWorld: $missing" >&2
      # shellcheck disable=SC2086
      { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
          $missing >/dev/null; } || echo "[setup] WARNING: apt-get failed; MiniWorld tests will fail until $missing are installed" >&2
    else
      echo "[setup] MiniWorld needs headless OpenGL; run: sudo apt-get install -y --no-install-recommends $missing" >&2
    fi
  fi
else
  echo "[setup] not Debian/Ubuntu: install EGL + Mesa (libEGL, libGL, libGLU, Mesa DRI) for MiniWorld yourself" >&2
fi
stamp="$VENV/.vldac-installed"
want="$(cat pyproject.toml | sha256sum | cut -c1-16) $TORCH_SPEC $EXTRAS"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
echo "[setup] creating $VENV (torch: $TORCH_SPEC, extras: $EXTRAS)" >&2
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
# fast-downward-textworld's build runs a bare `python build.py`: make that the venv's interpreter
# (another python on PATH, e.g. a pyenv shim, fails inside pip's isolated build env).
case "$VENV" in /*) export PATH="$VENV/bin:$PATH" ;; *) export PATH="$PWD/$VENV/bin:$PATH" ;; esac
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first, on its own, so the project's range (torch>=2.4,<2.15) is already satisfied.
# shellcheck disable=SC2086
"$VENV/bin/python" -m pip install -q $TORCH_SPEC
"$VENV/bin/python" -m pip install -q -e ".[$EXTRAS]"
echo "$want" > "$stamp"
echo "[setup] done" >&2

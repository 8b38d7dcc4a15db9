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
[ -n "${VLDAC_EXTRAS:-}" ] || EXTRAS="$EXTRAS,webshop"
# Sweeps (Hydra's joblib/SLURM launchers, the Optuna sweeper) are tested in CI: default install.
[ -n "${VLDAC_EXTRAS:-}" ] || EXTRAS="$EXTRAS,sweep"
# Ray (env.pool_mode=ray) is in the default install so CI runs the Ray pool's tests (≈ 240 MB installed).
[ -n "${VLDAC_EXTRAS:-}" ] || EXTRAS="$EXTRAS,ray"
# System packages (Debian/Ubuntu), checked on every run (cheap); installed only when missing and
# we are root, else the apt-get line is printed. ensure_apt <who needs them> <packages...>
ensure_apt() {
  local who=$1; shift
  if ! command -v dpkg >/dev/null 2>&1; then
    echo "[setup] not Debian/Ubuntu: install the equivalent of '$*' yourself for $who" >&2
    return 0
  fi
  local missing
  missing=$(for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || printf '%s ' "$p"; done)
  [ -n "$missing" ] || return 0
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "[setup] installing for $who: $missing" >&2
    # shellcheck disable=SC2086
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        $missing >/dev/null; } || echo "[setup] WARNING: apt-get failed; $who will fail until $missing are installed" >&2
  else
    echo "[setup] $who needs system packages; run: sudo apt-get install -y --no-install-recommends $missing" >&2
  fi
}
# MiniWorld renders with OpenGL; headless that is EGL + Mesa's software renderer.
ensure_apt "MiniWorld (headless OpenGL)" libegl1 libegl-mesa0 libgl1-mesa-dri libgl1 libglu1-mesa
# WebShop screenshots its store with headless Chromium, driven by playwright (which never
# downloads a browser here). ≈ 30 s and ≈ 350 MB on Debian 12.
ensure_apt "WebShop (headless browser)" chromium
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

#!/usr/bin/env bash
# Quickstart: set up (first time only) and train on the embedded default
# (gym-cards NumberLine, the tiny offline VLM, CPU). Extra arguments are Hydra overrides.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m vldac_lightning.train "$@"

#!/usr/bin/env bash
# Quickstart: set up (first time only) and run the test suite. CI runs exactly this.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# setup.sh installs MiniWorld and headless GL: a test that cannot render fails here instead of skipping.
export VLDAC_REQUIRE_MINIWORLD=${VLDAC_REQUIRE_MINIWORLD:-1}
# ... and Chromium for WebShop: a missing browser fails the WebShop tests instead of skipping them.
export VLDAC_REQUIRE_WEBSHOP=${VLDAC_REQUIRE_WEBSHOP:-1}
# ... and Ray: a Ray that does not import or start fails the Ray pool's tests instead of skipping them.
export VLDAC_REQUIRE_RAY=${VLDAC_REQUIRE_RAY:-1}
exec .venv/bin/python -m pytest -q "$@"

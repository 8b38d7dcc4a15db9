"""Where a pretrained checkpoint's weights will come from, decided in seconds before any loading.

Without this, ``model=qwen2_vl_2b`` on a machine with no hub access retries downloads for about a
minute and ends in a 130-line trace. :func:`weights_source` answers first — a local folder, the
Hugging Face cache, or the hub (one request, short timeout) — with the fix when none works.
``train`` refuses to start on a failure (:func:`check_pretrained_available`); ``doctor`` reports it.
Light imports only (no torch/transformers). See docs/troubleshooting.md#pretrained-weights-and-no-hub-access.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vldac_lightning.utils.config import ConfigError

log = logging.getLogger(__name__)

NETWORK_TIMEOUT_S = 3.0
OFFLINE_FIX = "set model.local_files_only=true and model.name_or_path=/path/to/local/weights"


def http_get_status(url: str, timeout: float = NETWORK_TIMEOUT_S) -> int:
    """The HTTP status of ``GET url`` (raises ``OSError`` when the host cannot be reached in time)."""
    request = urllib.request.Request(url, headers={"User-Agent": "vldac_lightning"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return int(response.status)
    except urllib.error.HTTPError as e:
        return int(e.code)


def hub_endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def hf_cached(repo_id: str) -> str | None:
    """The cached ``config.json`` of a hub repo, or None (no network)."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except ValueError:  # not a valid repo id
        return None
    return found if isinstance(found, str) else None


@dataclass(frozen=True)
class WeightsSource:
    """``ok``: the weights can be had; ``local_only``: load without touching the hub; ``fix``: what to do."""

    ok: bool
    local_only: bool
    detail: str
    fix: str = ""


def weights_source(model_cfg: Any, timeout: float = NETWORK_TIMEOUT_S) -> WeightsSource:
    """Decide where ``model.name_or_path``'s weights come from (a few seconds at most)."""
    name = str(model_cfg.get("name_or_path") or "")
    path = Path(name).expanduser()
    if path.is_dir():
        if (path / "config.json").is_file():
            return WeightsSource(True, True, f"local weights in {path}")
        return WeightsSource(False, True, f"{path} has no config.json",
                             "point model.name_or_path at the folder holding config.json and the *.safetensors files")
    if not name or name.startswith(("/", ".", "~")) or path.exists():
        return WeightsSource(False, True, f"model.name_or_path={name!r} is not a folder",
                             "set model.name_or_path to a weights folder (with config.json) or a hub id like "
                             "Qwen/Qwen2-VL-2B-Instruct")
    offline = bool(model_cfg.get("local_files_only")) or \
        os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes")
    cached = hf_cached(name)
    if cached and offline:
        return WeightsSource(True, True, f"{name} is in the Hugging Face cache ({Path(cached).parent})")
    if offline:
        return WeightsSource(False, True, f"{name} is not in the Hugging Face cache and downloads are off",
                             f"download it where the hub is reachable (hf download {name} --local-dir DIR) and copy "
                             f"the folder here; then {OFFLINE_FIX}")
    endpoint = hub_endpoint()
    try:
        status = http_get_status(f"{endpoint}/api/models/{name}", timeout)
    except OSError as e:
        if cached:  # no hub, but the cache has it: load from there instead of retrying downloads
            return WeightsSource(True, True, f"{endpoint} is not reachable; using {name} from the Hugging Face cache")
        return WeightsSource(False, False, f"{name} is not cached and {endpoint} is not reachable: "
                             f"{getattr(e, 'reason', e)}", OFFLINE_FIX)
    if status == 200:
        where = "is in the Hugging Face cache" if cached else f"will be downloaded from {endpoint} on first use"
        return WeightsSource(True, False, f"{name} {where}")
    if status in (401, 403):
        return WeightsSource(False, False, f"{endpoint} refuses {name} (HTTP {status}: gated or private)",
                             "accept the model's license on the hub and export HF_TOKEN=...")
    return WeightsSource(False, False, f"{endpoint} has no model {name!r} (HTTP {status})",
                         "check model.name_or_path (a hub id like Qwen/Qwen2-VL-2B-Instruct, or a local folder)")


def check_pretrained_available(model_cfg: Any) -> bool:
    """For ``model.source=pretrained``: whether to load with ``local_files_only``; a
    :class:`ConfigError` naming the fix when the weights cannot be had (no download retries)."""
    source = weights_source(model_cfg)
    if not source.ok:
        raise ConfigError(f"model weights: {source.detail}. Fix: {source.fix}")
    if source.local_only and not model_cfg.get("local_files_only"):
        log.warning("%s", source.detail)
    return source.local_only

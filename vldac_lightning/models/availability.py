"""Where a pretrained checkpoint's weights will come from, decided in seconds before any loading.

Without this, ``model=qwen2_vl_2b`` on a machine with no hub access retries downloads for about a
minute and ends in a 130-line trace. :func:`check_pretrained_available` answers first: a local
folder, the Hugging Face cache, or a reachable hub — else a :class:`~vldac_lightning.utils.config.ConfigError`
that says what to set. Light imports only (no torch/transformers): it runs before the model loads.
"""

from __future__ import annotations

import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from vldac_lightning.utils.config import ConfigError

log = logging.getLogger(__name__)

HUB_PROBE_TIMEOUT_S = 5.0


def hub_endpoint() -> str:
    from huggingface_hub import constants

    return os.environ.get("HF_ENDPOINT") or constants.ENDPOINT


def hub_reachable(timeout: float = HUB_PROBE_TIMEOUT_S) -> tuple[bool, str]:
    """(reachable, detail) for the Hugging Face hub endpoint, within ``timeout`` seconds."""
    url = hub_endpoint()
    try:
        urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=timeout)
    except urllib.error.HTTPError:
        return True, f"{url} answered"  # any HTTP answer means the network path works
    except (urllib.error.URLError, OSError) as exc:
        return False, f"{url} unreachable ({getattr(exc, 'reason', exc)})"
    return True, f"{url} reachable"


def in_hf_cache(repo_id: str) -> bool:
    """True if the hub cache holds ``repo_id``'s config.json (weights are then usually there too)."""
    from huggingface_hub import try_to_load_from_cache

    try:
        found = try_to_load_from_cache(repo_id, "config.json")
    except Exception:  # an id that is not a valid repo name
        return False
    return isinstance(found, str) and Path(found).is_file()


def _offline_hint(name: str) -> str:
    return (f"Download it where the hub is reachable (huggingface-cli download {name} --local-dir /path/to/weights), "
            "copy the folder here, and pass model.name_or_path=/path/to/weights model.local_files_only=true.")


def check_pretrained_available(model_cfg: Any, timeout: float = HUB_PROBE_TIMEOUT_S) -> bool:
    """For ``model.source=pretrained``: return whether to load with ``local_files_only``; raise a
    :class:`ConfigError` naming the fix when the weights cannot be had (no retries, a few seconds)."""
    name = str(model_cfg.get("name_or_path") or "")
    local_only = bool(model_cfg.get("local_files_only", False)) or os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0")
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise ConfigError(f"model.name_or_path={name} is a folder without config.json: point it at the "
                              "checkpoint's folder (the one holding config.json and the *.safetensors files)")
        return True
    if name.startswith(("/", "./", "../", "~")):
        raise ConfigError(f"model.name_or_path={name} does not exist. {_offline_hint('<hub id>')}")
    if in_hf_cache(name):
        if not local_only:
            ok, detail = hub_reachable(timeout)
            if not ok:
                log.warning("%s; loading %s from the local Hugging Face cache", detail, name)
                return True
        return local_only
    if local_only:
        raise ConfigError(f"model.name_or_path={name} is not in the local Hugging Face cache and "
                          f"model.local_files_only=true (or HF_HUB_OFFLINE) forbids downloading. {_offline_hint(name)}")
    ok, detail = hub_reachable(timeout)
    if not ok:
        raise ConfigError(f"model.name_or_path={name} must be downloaded, but the Hugging Face hub is not "
                          f"reachable: {detail}. {_offline_hint(name)} (Behind a proxy: set HTTPS_PROXY; a mirror: "
                          "HF_ENDPOINT.)")
    return False

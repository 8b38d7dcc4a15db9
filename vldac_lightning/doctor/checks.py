"""The machine checks behind ``python -m vldac_lightning.doctor``: one function per thing a run needs.

Each check takes the composed run config and returns a :class:`Check`: its verdict and, when it is
not ``ok``, the command or setting that fixes it. Probes that touch the outside world (network,
GPU, browser, OpenGL) are small module-level functions, so tests can replace them. Everything
heavy is imported inside the check that needs it: the doctor starts in about a second.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from omegaconf import DictConfig

from vldac_lightning.models import availability
from vldac_lightning.models.availability import http_get_status

__all__ = ["CHECKS", "Check", "NETWORK_TIMEOUT_S", "STATUSES"]

STATUSES = ("ok", "warn", "fail")
NETWORK_TIMEOUT_S = 3.0  # every network probe; an unreachable host must not stall the doctor
DISK_FAIL_GIB = 1.0  # below this a run cannot even write its checkpoints and MLflow store
DISK_WARN_GIB = 10.0  # a pretrained backbone's weights alone take 4-16 GB in the Hugging Face cache
_SIZE_IN_NAME = re.compile(r"(?<![\d.])(\d+(?:\.\d+)?)\s*[bB](?![a-zA-Z])")  # "...-7B-Instruct" -> 7
_DTYPE_BYTES = {"float32": 4, "fp32": 4, "float16": 2, "fp16": 2, "bfloat16": 2, "bf16": 2}


@dataclass(frozen=True)
class Check:
    """One line of the report: ``status`` is ``ok``, ``warn`` or ``fail``; ``fix`` is empty when ok."""

    name: str
    status: str
    detail: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return asdict(self)


# --------------------------------------------------------------------------------------- probes
def find_browser(executable: str | None = None) -> str | None:
    """The Chromium/Chrome executable WebShop will drive (the env's own lookup), or None."""
    from vldac_lightning.envs.webshop.browser import find_chromium

    try:
        return find_chromium(executable)
    except FileNotFoundError:
        return None


def browser_problem(executable: str) -> str | None:
    """Why ``executable`` is not a working Chromium (the check ``train`` runs first), or None."""
    from vldac_lightning.envs.webshop.browser import chromium_problem

    return chromium_problem(executable)


def cuda_devices() -> list[tuple[str, int, int]]:
    """``(name, free bytes, total bytes)`` of every visible CUDA device ([] without CUDA)."""
    import torch

    if not torch.cuda.is_available():
        return []
    out = []
    for i in range(torch.cuda.device_count()):
        free, total = torch.cuda.mem_get_info(i)
        out.append((torch.cuda.get_device_name(i), int(free), int(total)))
    return out


def miniworld_render_problem() -> str | None:
    """None when MiniWorld renders here, else what to install (the env package's own probe)."""
    from vldac_lightning.envs.miniworld import render_problem

    return render_problem()


def planner_problem() -> str | None:
    """None when ALFWorld's planner (Fast Downward's ``libdownward.so``) loads, else why not."""
    import ctypes

    try:
        from fast_downward.interface import DOWNWARD_LIB_PATH
    except ImportError as e:
        return f"the fast_downward package does not import ({e})"
    if not Path(DOWNWARD_LIB_PATH).is_file():
        return f"{DOWNWARD_LIB_PATH} is missing (the planner was never compiled)"
    try:
        ctypes.CDLL(str(DOWNWARD_LIB_PATH))
    except OSError as e:
        return f"{DOWNWARD_LIB_PATH} does not load: {e}"
    return None


# -------------------------------------------------------------------------------------- helpers
def _env_id(cfg: DictConfig) -> str:
    return str(cfg.env.get("id", ""))


def _failure(needed: bool, family: str) -> tuple[str, str]:
    """(status, note) of a broken simulator: a failure if the chosen env uses it, else a warning."""
    return ("fail", "") if needed else ("warn", f" (only needed for env={family})")


def _existing_ancestor(path: Path) -> Path:
    path = path.expanduser().absolute()
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def model_size_b(model: DictConfig) -> float | None:
    """Parameters of the chosen backbone in billions: from its name ("...-7B-..."), else from a
    local safetensors index (``total_size`` bytes / dtype size); None when unknown."""
    name = str(model.get("name_or_path") or "")
    match = _SIZE_IN_NAME.search(Path(name).name or name)
    if match:
        return float(match.group(1))
    index = Path(name).expanduser() / "model.safetensors.index.json"
    if name and index.is_file():
        total = json.loads(index.read_text()).get("metadata", {}).get("total_size")
        if total:
            return float(total) / _DTYPE_BYTES.get(str(model.get("dtype")), 2) / 1e9
    return None


def training_memory_gib(params_b: float, dtype: str) -> float:
    """Rough GPU memory for LoRA training: weights, +30% for LoRA states, activations and the
    value head (gradient checkpointing on), + 4 GiB for generation caches and the CUDA context."""
    return params_b * 1e9 * _DTYPE_BYTES.get(dtype, 2) * 1.3 / 2**30 + 4.0


# --------------------------------------------------------------------------------------- checks
def check_python(cfg: DictConfig) -> Check:
    """Which interpreter runs (informational: the package itself requires Python >= 3.10)."""
    return Check("python", "ok", f"Python {'.'.join(map(str, sys.version_info[:3]))} ({sys.executable})")


def check_torch(cfg: DictConfig) -> Check:
    try:
        import torch
    except ImportError as e:
        return Check("torch", "fail", f"torch does not import: {e}",
                     "bash scripts/setup.sh (installs the pinned CPU torch; GPU: set VLDAC_TORCH_SPEC)")
    cuda = torch.version.cuda
    return Check("torch", "ok", f"torch {torch.__version__} ({f'CUDA {cuda} build' if cuda else 'CPU-only build'})")


def check_gpu(cfg: DictConfig) -> Check:
    model = cfg.model
    accelerator = str(cfg.get("trainer", {}).get("accelerator", "auto"))
    size = model_size_b(model) if model.source == "pretrained" else None
    need = training_memory_gib(size, str(model.get("dtype"))) if size else None
    want = f"~{need:.0f} GiB for a {size:g}B model" if need else "unknown for this model"
    try:
        devices = cuda_devices()
    except ImportError:
        return Check("gpu", "fail", "torch is missing", "see the torch check")
    if not devices:
        import torch

        fix_cuda = ("install a CUDA build of torch: VLDAC_TORCH_SPEC=\"torch==2.13.0 --index-url "
                    "https://download.pytorch.org/whl/cu128\" bash scripts/setup.sh" if torch.version.cuda is None
                    else "this torch is a CUDA build but sees no GPU: check `nvidia-smi` and CUDA_VISIBLE_DEVICES")
        if accelerator in ("gpu", "cuda"):
            return Check("gpu", "fail", f"no CUDA GPU, but trainer.accelerator={accelerator}", fix_cuda)
        if model.source == "tiny":
            return Check("gpu", "ok", "no CUDA GPU; model=tiny trains on the CPU")
        return Check("gpu", "warn", f"no CUDA GPU: a pretrained backbone ({want}) on the CPU is impractically slow",
                     f"{fix_cuda}; or try the pipeline with model=tiny")
    name, free, total = max(devices, key=lambda d: d[2])
    detail = f"{len(devices)}× {name}, {total / 2**30:.0f} GiB ({free / 2**30:.0f} GiB free); needs {want}"
    if need and need > total / 2**30:
        return Check("gpu", "fail", detail, "use a smaller model (model=qwen2_vl_2b), or a GPU with more memory")
    if need and need > free / 2**30:
        return Check("gpu", "warn", detail, "other processes hold GPU memory: free it (nvidia-smi) or pick a smaller model")
    return Check("gpu", "ok", detail)


def check_miniworld(cfg: DictConfig) -> Check:
    needed = _env_id(cfg).startswith("miniworld/")
    problem = miniworld_render_problem()
    if problem is None:
        return Check("miniworld (OpenGL/EGL)", "ok", "renders headless")
    status, note = _failure(needed, "miniworld/*")
    first, _, rest = problem.partition("\n")
    return Check("miniworld (OpenGL/EGL)", status, first + note, rest.strip() or "bash scripts/setup.sh")


def check_alfworld(cfg: DictConfig) -> Check:
    from vldac_lightning.envs.registry import missing_requirement

    needed = _env_id(cfg).startswith("alfworld/")
    hint = missing_requirement("alfworld/AlfWorld-v0")
    if hint is None:
        problem = planner_problem()
        if problem is None:
            return Check("alfworld (packages, planner)", "ok", "alfworld + textworld import; Fast Downward planner loads")
        hint, fix = f"the planner is not usable: {problem}", (
            "reinstall it with the venv's python first on PATH (its build runs `python build.py`): "
            "PATH=$VIRTUAL_ENV/bin:$PATH pip install --force-reinstall --no-deps fast-downward-textworld")
    else:
        hint, fix = hint.split(": run", 1)[0], "pip install 'vldac_lightning[alfworld]' (or bash scripts/setup.sh)"
    status, note = _failure(needed, "alfworld/*")
    return Check("alfworld (packages, planner)", status, hint + note, fix)


def check_alfworld_data(cfg: DictConfig) -> Check:
    env_kwargs = (cfg.env.get("env_kwargs") or {}) if _env_id(cfg).startswith("alfworld/") else {}
    source = str(env_kwargs.get("source", "auto"))
    root = env_kwargs.get("data_dir") or os.environ.get("ALFWORLD_DATA")
    if root is None:
        if source == "official":
            return Check("ALFWORLD_DATA", "fail", "env.env_kwargs.source=official but no dataset folder is set",
                         "export ALFWORLD_DATA=/path/holding/json_2.1.1 (alfworld-download fetches it), or source=generated")
        return Check("ALFWORLD_DATA", "ok", "not set (optional): ALFWorld plays generated games")
    from vldac_lightning.envs.alfworld.games import has_official_data  # light: no TextWorld import

    path = Path(str(root)).expanduser()
    if not path.is_dir():
        return Check("ALFWORLD_DATA", "fail" if source == "official" else "warn", f"{path} does not exist",
                     f"mkdir -p {path} (alfworld-download puts the dataset there), or unset ALFWORLD_DATA")
    if has_official_data(path):
        return Check("ALFWORLD_DATA", "ok", f"{path} holds the official dataset (json_2.1.1/)")
    if source == "official":
        return Check("ALFWORLD_DATA", "fail", f"{path} has no json_2.1.1/train (the official dataset)",
                     "run `alfworld-download` with ALFWORLD_DATA set, or use env.env_kwargs.source=generated")
    return Check("ALFWORLD_DATA", "ok", f"{path} (no official dataset: generated games are used)")


def check_webshop_browser(cfg: DictConfig) -> Check:
    from vldac_lightning.envs.registry import missing_requirement
    from vldac_lightning.envs.webshop.browser import APT_LINE

    needed = _env_id(cfg).startswith("webshop/")
    configured = cfg.env.get("env_kwargs", {}).get("browser_executable") if needed else None
    browser, packages = find_browser(configured), missing_requirement("webshop/WebShop-v0")
    status, note = _failure(needed, "webshop")
    problem = browser_problem(browser) if browser else None
    if problem is not None:
        return Check("webshop (browser)", status, problem.split("; point")[0] + note,
                     f"set env.env_kwargs.browser_executable (or VLDAC_CHROMIUM) to a Chromium/Chrome binary, or {APT_LINE}")
    if browser and packages is None:
        return Check("webshop (browser)", "ok", f"{browser}; playwright, flask, rapidfuzz import")
    if browser is None:
        return Check("webshop (browser)", status, "no Chromium found" + note,
                     f"{APT_LINE} (or bash scripts/setup.sh as root); or set VLDAC_CHROMIUM=/path/to/chromium")
    return Check("webshop (browser)", status, str(packages).split(": run")[0] + note,
                 "pip install 'vldac_lightning[webshop]' (or bash scripts/setup.sh)")


def ray_version() -> str | None:
    """The installed Ray's version, or None (found without importing Ray: that takes seconds)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ray")
    except PackageNotFoundError:
        return None


def ray_address_problem(address: str) -> str | None:
    """Why nothing answers at a Ray cluster address (the probe ``train`` runs first), or None."""
    from vldac_lightning.envs.ray_worker import address_problem

    return address_problem(address, timeout=NETWORK_TIMEOUT_S)


def check_ray(cfg: DictConfig) -> Check:
    from vldac_lightning.envs.ray_worker import RAY_MISSING, RayOptions

    needed = str(cfg.env.get("pool_mode")) == "ray"
    installed = ray_version()
    if installed is None:
        note = "" if needed else " (only needed for env.pool_mode=ray)"
        return Check("ray (env workers)", "fail" if needed else "warn", "Ray is not installed" + note,
                     RAY_MISSING.split(": ", 1)[1] + " (or bash scripts/setup.sh)")
    if not needed:
        return Check("ray (env workers)", "ok", f"ray {installed} (used with env.pool_mode=ray)")
    address = RayOptions.from_mapping(cfg.env.get("ray")).cluster_address()
    if address and (problem := ray_address_problem(address)) is not None:
        return Check("ray (env workers)", "fail", f"ray {installed}; the Ray cluster at {address} is not reachable: "
                     f"{problem}", "start it there (`ray start --head`), correct env.ray.address / $RAY_ADDRESS, or "
                     "set env.ray.address=null and unset RAY_ADDRESS to start a local Ray")
    where = f"connects to the Ray cluster at {address}" if address else "starts a local Ray"
    return Check("ray (env workers)", "ok", f"ray {installed}; env.pool_mode=ray {where}")


def check_mlflow(cfg: DictConfig) -> Check:
    mlflow = (cfg.get("logger") or {}).get("mlflow")
    if mlflow is None:
        return Check("mlflow store", "ok", "logger=none: no MLflow store is used")
    uri = str(mlflow.tracking_uri)
    local = "unset MLFLOW_TRACKING_URI to use the local store under paths.log_dir (sqlite, no server needed)"
    if uri.startswith(("http://", "https://")):
        url = uri.rstrip("/") + "/health"
        try:
            status = http_get_status(url)
        except OSError as e:
            return Check("mlflow store", "fail", f"{uri} is not reachable: {getattr(e, 'reason', e)}",
                         f"start the server (mlflow server --backend-store-uri sqlite:///mlflow.db --port PORT), "
                         f"fix MLFLOW_TRACKING_URI, or {local}")
        if status != 200:
            return Check("mlflow store", "fail", f"{url} answered HTTP {status}", f"check the server's logs, or {local}")
        return Check("mlflow store", "ok", f"server at {uri} is up")
    if uri.startswith("sqlite:///"):
        db = Path(uri[len("sqlite:///"):]).expanduser().absolute()
        if db.exists():
            try:
                with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=NETWORK_TIMEOUT_S) as conn:
                    conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            except sqlite3.Error as e:
                return Check("mlflow store", "fail", f"{db} is not a readable sqlite database: {e}",
                             "move the file away, or point MLFLOW_TRACKING_URI at a new sqlite:///... file")
            return Check("mlflow store", "ok", f"sqlite store {db}")
        parent = _existing_ancestor(db.parent)
        if not os.access(parent, os.W_OK):
            return Check("mlflow store", "fail", f"cannot create {db}: {parent} is not writable",
                         "set paths.log_dir (or VLDAC_ROOT) to a writable folder, or MLFLOW_TRACKING_URI")
        return Check("mlflow store", "ok", f"sqlite store {db} (created on first run)")
    if uri.startswith(("file:", "/", ".")) or "://" not in uri:
        return Check("mlflow store", "fail", f"{uri} is a plain file store, which current MLflow refuses",
                     f"use sqlite: MLFLOW_TRACKING_URI=sqlite:///{Path('logs/mlflow/mlflow.db').absolute()}")
    return Check("mlflow store", "warn", f"{uri.split('://')[0]} store: not checked by the doctor", "")


def check_disk(cfg: DictConfig, fail_below_gib: float = DISK_FAIL_GIB, warn_below_gib: float = DISK_WARN_GIB) -> Check:
    log_dir = Path(str(cfg.paths.log_dir))
    where = _existing_ancestor(log_dir)
    free = shutil.disk_usage(where).free / 2**30
    detail = f"{free:.1f} GiB free under {log_dir.expanduser().absolute()}"
    fix = f"free space on {where} or set paths.log_dir=/a/bigger/disk"
    if free < fail_below_gib:
        return Check("disk", "fail", f"{detail} (< {fail_below_gib:g} GiB)", fix)
    if free < warn_below_gib:
        return Check("disk", "warn", f"{detail} (< {warn_below_gib:g} GiB: tight for checkpoints and weights)", fix)
    return Check("disk", "ok", detail)


def check_model_weights(cfg: DictConfig) -> Check:
    model = cfg.model
    if model.source != "pretrained":
        return Check("model weights", "ok", f"model.source={model.source}: built in code, nothing to download")
    source = availability.weights_source(model, timeout=NETWORK_TIMEOUT_S)  # the decision train() makes
    return Check("model weights", "ok" if source.ok else "fail", source.detail, "" if source.ok else source.fix)


CHECKS: tuple[Callable[[DictConfig], Check], ...] = (
    check_python, check_torch, check_gpu, check_disk, check_mlflow, check_model_weights,
    check_miniworld, check_alfworld, check_alfworld_data, check_webshop_browser, check_ray,
)

"""``python -m vldac_lightning.doctor``: every check's failure path says what to do; the real CLI runs here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from omegaconf import DictConfig

from vldac_lightning.doctor import Check, compose_run_config, main, render_table, run_checks
from vldac_lightning.doctor import checks as doctor
from vldac_lightning.envs.miniworld.headless import gl_error_message
from vldac_lightning.models import availability

ROOT = Path(__file__).resolve().parents[1]
GIB = 2**30


@pytest.fixture
def compose(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., DictConfig]:
    """The run config for some overrides, with logs (and the default MLflow store) under tmp_path."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("ALFWORLD_DATA", raising=False)

    def build(*overrides: str) -> DictConfig:
        return compose_run_config([f"paths.log_dir={tmp_path / 'logs'}", *overrides])

    return build


# ------------------------------------------------------------------------------------ MLflow
def test_an_unreachable_mlflow_server_fails_within_the_timeout(compose, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # the discard port: nothing listens
    timeouts = []
    real = doctor.http_get_status

    def recording(url: str, timeout: float = doctor.NETWORK_TIMEOUT_S) -> int:
        timeouts.append(timeout)
        return real(url, timeout)

    monkeypatch.setattr(doctor, "http_get_status", recording)
    check = doctor.check_mlflow(compose())
    assert check.status == "fail" and "http://127.0.0.1:9" in check.detail
    assert "mlflow server" in check.fix and "MLFLOW_TRACKING_URI" in check.fix
    assert timeouts == [doctor.NETWORK_TIMEOUT_S] and doctor.NETWORK_TIMEOUT_S <= 3


def test_mlflow_store_verdicts(compose, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    check = doctor.check_mlflow(compose())  # the default: sqlite under paths.log_dir, not created yet
    assert check.status == "ok" and str(tmp_path / "logs" / "mlflow" / "mlflow.db") in check.detail
    assert not (tmp_path / "logs").exists()  # the doctor writes nothing
    assert doctor.check_mlflow(compose("logger=none")).status == "ok"

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"file://{tmp_path}/mlruns")
    check = doctor.check_mlflow(compose())
    assert check.status == "fail" and "MLFLOW_TRACKING_URI=sqlite:///" in check.fix

    (tmp_path / "not.db").write_text("not a database at all, just text " * 100)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'not.db'}")
    check = doctor.check_mlflow(compose())
    assert check.status == "fail" and "not a readable sqlite database" in check.detail

    monkeypatch.setattr(doctor, "http_get_status", lambda url, timeout=3: 200)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.internal:5000")
    assert doctor.check_mlflow(compose()).status == "ok"


# ----------------------------------------------------------------------------- model weights
def test_a_missing_weights_folder_fails_with_the_fix(compose, tmp_path: Path) -> None:
    missing = tmp_path / "weights" / "qwen"
    check = doctor.check_model_weights(compose("model=qwen2_vl_2b", f"model.name_or_path={missing}"))
    assert check.status == "fail" and "not a folder" in check.detail and "model.name_or_path" in check.fix

    missing.mkdir(parents=True)
    check = doctor.check_model_weights(compose("model=qwen2_vl_2b", f"model.name_or_path={missing}"))
    assert check.status == "fail" and "config.json" in check.detail

    (missing / "config.json").write_text("{}")
    assert doctor.check_model_weights(compose("model=qwen2_vl_2b", f"model.name_or_path={missing}")).status == "ok"
    assert doctor.check_model_weights(compose("model=tiny")).status == "ok"


def test_without_network_the_weights_check_says_how_to_run_offline(compose, monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))  # an empty cache

    def unreachable(url: str, timeout: float = 3) -> int:
        raise OSError("[Errno -2] Name or service not known")

    monkeypatch.setattr(availability, "http_get_status", unreachable)
    check = doctor.check_model_weights(compose("model=qwen2_vl_2b"))
    assert check.status == "fail" and "not reachable" in check.detail
    assert check.fix == "set model.local_files_only=true and model.name_or_path=/path/to/local/weights"

    check = doctor.check_model_weights(compose("model=qwen2_vl_2b", "model.local_files_only=true"))
    assert check.status == "fail" and "model.name_or_path=/path/to/local/weights" in check.fix

    # The same id in the Hugging Face cache (its real layout): found, no network needed.
    repo = tmp_path / "hf" / "models--Qwen--Qwen2-VL-2B-Instruct"
    (repo / "snapshots" / "abc123").mkdir(parents=True)
    (repo / "snapshots" / "abc123" / "config.json").write_text("{}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("abc123")
    check = doctor.check_model_weights(compose("model=qwen2_vl_2b", "model.local_files_only=true"))
    assert check.status == "ok" and "cache" in check.detail

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    for status, verdict in ((200, "ok"), (401, "fail"), (404, "fail")):
        monkeypatch.setattr(availability, "http_get_status", lambda url, timeout=3, s=status: s)
        assert doctor.check_model_weights(compose("model=qwen2_vl_2b")).status == verdict


# ----------------------------------------------------------------------------------- GPU
@pytest.mark.parametrize("name, size", [("Qwen/Qwen2-VL-7B-Instruct", 7.0), ("Qwen/Qwen2.5-VL-3B-Instruct", 3.0),
                                        ("Qwen/Qwen2-VL-2B-Instruct", 2.0), ("/weights/my-model", None)])
def test_model_size_comes_from_the_name(name: str, size: float | None) -> None:
    assert doctor.model_size_b(DictConfig({"name_or_path": name, "dtype": "bfloat16"})) == size


def test_model_size_of_a_local_folder_comes_from_its_safetensors_index(tmp_path: Path) -> None:
    index = {"metadata": {"total_size": 4_000_000_000}, "weight_map": {}}  # 4 GB of bf16 = 2 B parameters
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    assert doctor.model_size_b(DictConfig({"name_or_path": str(tmp_path), "dtype": "bfloat16"})) == 2.0


def test_gpu_memory_against_the_chosen_model(compose, monkeypatch: pytest.MonkeyPatch) -> None:
    need = doctor.training_memory_gib(7, "bfloat16")  # 7e9 * 2 B * 1.3 + 4 GiB
    assert need == pytest.approx(7e9 * 2 * 1.3 / GIB + 4)
    cases = [([("H100", 79 * GIB, 80 * GIB)], "ok"), ([("T4", 15 * GIB, 16 * GIB)], "fail"),
             ([("A100", 10 * GIB, 80 * GIB)], "warn")]
    for devices, verdict in cases:
        monkeypatch.setattr(doctor, "cuda_devices", lambda d=devices: d)
        check = doctor.check_gpu(compose("model=qwen2_vl_7b"))
        assert check.status == verdict and f"{need:.0f} GiB" in check.detail, check
    monkeypatch.setattr(doctor, "cuda_devices", lambda: [])
    assert doctor.check_gpu(compose("model=tiny")).status == "ok"
    check = doctor.check_gpu(compose("model=tiny", "trainer=gpu"))
    assert check.status == "fail" and "trainer.accelerator=gpu" in check.detail and "torch" in check.fix
    check = doctor.check_gpu(compose("model=qwen2_vl_7b"))
    assert check.status == "warn" and "model=tiny" in check.fix


# ---------------------------------------------------------------------- simulators, browser
def test_missing_gl_fails_for_miniworld_and_warns_otherwise(compose, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "miniworld_render_problem", lambda: gl_error_message("libEGL.so.1: cannot open"))
    check = doctor.check_miniworld(compose("env=miniworld/oneroom"))
    assert check.status == "fail" and "libEGL" in check.detail and "apt-get install" in check.fix
    check = doctor.check_miniworld(compose("env=gym_cards/ezpoints"))
    assert check.status == "warn" and "only needed for env=miniworld" in check.detail


def test_alfworld_packages_and_planner(compose, monkeypatch: pytest.MonkeyPatch) -> None:
    from vldac_lightning.envs import registry

    monkeypatch.setattr(doctor, "planner_problem", lambda: "/x/libdownward.so is missing (the planner was never compiled)")
    monkeypatch.setattr(registry, "missing_requirement", lambda env_id: None)
    check = doctor.check_alfworld(compose("env=alfworld"))
    assert check.status == "fail" and "libdownward" in check.detail and "fast-downward-textworld" in check.fix
    assert doctor.check_alfworld(compose()).status == "warn"

    monkeypatch.setattr(registry, "missing_requirement", lambda env_id: "env needs ['alfworld']: run `pip ...`")
    check = doctor.check_alfworld(compose("env=alfworld"))
    assert check.status == "fail" and "vldac_lightning[alfworld]" in check.fix


def test_alfworld_data(compose, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert doctor.check_alfworld_data(compose("env=alfworld")).status == "ok"  # unset: generated games
    check = doctor.check_alfworld_data(compose("env=alfworld", "env.env_kwargs.source=official"))
    assert check.status == "fail" and "ALFWORLD_DATA" in check.fix

    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path / "nowhere"))
    check = doctor.check_alfworld_data(compose("env=alfworld"))
    assert check.status == "warn" and "does not exist" in check.detail and "mkdir -p" in check.fix

    monkeypatch.setenv("ALFWORLD_DATA", str(tmp_path))
    check = doctor.check_alfworld_data(compose("env=alfworld", "env.env_kwargs.source=official"))
    assert check.status == "fail" and "alfworld-download" in check.fix
    (tmp_path / "json_2.1.1" / "train").mkdir(parents=True)
    check = doctor.check_alfworld_data(compose("env=alfworld", "env.env_kwargs.source=official"))
    assert check.status == "ok" and "official dataset" in check.detail


def test_a_missing_browser_is_a_warning_with_the_install_command(compose, monkeypatch: pytest.MonkeyPatch,
                                                                  tmp_path: Path) -> None:
    monkeypatch.setattr(doctor, "find_browser", lambda executable=None: None)
    check = doctor.check_webshop_browser(compose())
    assert check.status == "warn" and "only needed for env=webshop" in check.detail
    assert "apt-get install -y --no-install-recommends chromium" in check.fix
    assert doctor.check_webshop_browser(compose("env=webshop")).status == "fail"

    monkeypatch.undo()
    fake = tmp_path / "bin" / "chromium-browser"
    fake.parent.mkdir()
    fake.write_text("#!/bin/sh\necho 'Chromium 140.0 built on Debian'\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(fake.parent))
    found = doctor.find_browser()
    assert found == str(fake)
    assert doctor.check_webshop_browser(compose()).status == "ok"


def test_a_binary_that_is_not_chromium_fails_the_browser_check(compose) -> None:
    check = doctor.check_webshop_browser(compose("env=webshop", "env.env_kwargs.browser_executable=/bin/false"))
    assert check.status == "fail" and "/bin/false is not a working Chromium" in check.detail
    assert "browser_executable" in check.fix


def test_ray_is_checked_for_pool_mode_ray(compose, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    monkeypatch.setattr(doctor, "ray_version", lambda: None)
    check = doctor.check_ray(compose("env.pool_mode=ray"))
    assert check.status == "fail" and "not installed" in check.detail
    assert check.fix.startswith("pip install 'vldac_lightning[ray]'")
    check = doctor.check_ray(compose())  # async pool: Ray is not needed
    assert check.status == "warn" and "only needed for env.pool_mode=ray" in check.detail

    monkeypatch.setattr(doctor, "ray_version", lambda: "2.60.0")
    check = doctor.check_ray(compose("env.pool_mode=ray"))
    assert check.status == "ok" and "2.60.0" in check.detail and "local Ray" in check.detail
    monkeypatch.setattr(doctor, "ray_address_problem", lambda address: None)  # a cluster that answers
    check = doctor.check_ray(compose("env.pool_mode=ray", "env.ray.address=ray://head:10001"))
    assert check.status == "ok" and "ray://head:10001" in check.detail
    monkeypatch.setenv("RAY_ADDRESS", "10.0.0.5:6379")
    assert "10.0.0.5:6379" in doctor.check_ray(compose("env.pool_mode=ray")).detail


# ------------------------------------------------------------------------------------- disk
def test_low_disk(compose, tmp_path: Path) -> None:
    cfg = compose()  # paths.log_dir does not exist yet: its nearest existing parent is measured
    check = doctor.check_disk(cfg, fail_below_gib=1e9, warn_below_gib=2e9)
    assert check.status == "fail" and "paths.log_dir=" in check.fix and str(tmp_path / "logs") in check.detail
    assert doctor.check_disk(cfg, fail_below_gib=0, warn_below_gib=1e9).status == "warn"
    assert doctor.check_disk(cfg, fail_below_gib=0, warn_below_gib=0).status == "ok"


# -------------------------------------------------------------------------------------- CLI
def test_a_crashing_check_is_reported_and_the_others_still_run(compose) -> None:
    def broken(cfg: DictConfig) -> Check:
        raise KeyError("surprise")

    results = run_checks(compose(), [broken, doctor.check_python])
    assert [(r.name, r.status) for r in results] == [("broken", "fail"), ("python", "ok")]
    assert "KeyError" in results[0].detail
    table = render_table(results)
    assert "FAIL  broken" in table and "fix: " in table and table.endswith("1 ok, 0 warning(s), 1 failure(s)")


def test_an_unknown_choice_fails_with_the_valid_ones(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json", "env=bogus"]) == 1
    (check,) = json.loads(capsys.readouterr().out)["checks"]
    assert check["status"] == "fail" and "gym_cards/ezpoints" in check["detail"]


@pytest.mark.parametrize(("override", "message"), [
    ("+algo.kl_bata=1", "algo.kl_bata (did you mean algo.kl_beta?)"),
    ("algo.minibatch_size=0", "algo.minibatch_size=0 must be >= 1"),
])
def test_a_config_train_refuses_fails_the_doctor_too(override: str, message: str,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--json", override]) == 1
    config = json.loads(capsys.readouterr().out)["checks"][0]
    assert config["name"] == "config" and config["status"] == "fail" and message in config["detail"]


def test_the_cli_runs_on_this_machine(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MLFLOW_TRACKING_URI", "VLDAC_ROOT")}
    env.update(PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, "-m", "vldac_lightning.doctor", "--json"], cwd=tmp_path, env=env,
                            capture_output=True, text=True, timeout=300)
    report = json.loads(result.stdout)
    names = [c["name"] for c in report["checks"]]
    assert names == ["config", "python", "torch", "gpu", "disk", "mlflow store", "model weights",
                     "miniworld (OpenGL/EGL)", "alfworld (packages, planner)", "ALFWORLD_DATA", "webshop (browser)",
                     "ray (env workers)"]
    assert all(c["status"] in doctor.STATUSES for c in report["checks"])
    assert all(c["fix"] for c in report["checks"] if c["status"] == "fail")
    failed = any(c["status"] == "fail" for c in report["checks"])
    assert result.returncode == (1 if failed else 0) and report["ok"] is not failed
    by_name = {c["name"]: c for c in report["checks"]}
    assert by_name["config"]["status"] == by_name["python"]["status"] == by_name["torch"]["status"] == "ok"
    assert str(tmp_path / "logs") in by_name["disk"]["detail"]  # the default log dir is where you launch
    assert list(tmp_path.iterdir()) == []  # it wrote nothing

"""``python -m vldac_lightning.doctor [--json] [group=choice ...] [key=value ...]``: check this machine.

Composes the same Hydra config a run would (``model=qwen2_vl_7b env=miniworld/oneroom`` pick what
you intend to run), then checks what that run needs: torch and the GPU (and whether its memory
fits the model, roughly), OpenGL/EGL for MiniWorld, ALFWorld's packages, planner and dataset, the
browser WebShop will need, the MLflow store, free disk, and the model weights (local or on the
hub). Each problem is printed with its fix. Exit status 1 when any check fails.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable, Sequence

from omegaconf import DictConfig

from .checks import CHECKS, Check

__all__ = ["Check", "compose_run_config", "config_check", "main", "render_table", "run_checks"]


def compose_run_config(overrides: Sequence[str] = (), config_name: str = "train.yaml") -> DictConfig:
    """The run config ``python -m vldac_lightning.train <overrides>`` would see (without the hydra node)."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from vldac_lightning.utils.paths import CONF_DIR

    GlobalHydra.instance().clear()
    try:
        with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
            return compose(config_name, overrides=list(overrides))
    finally:
        GlobalHydra.instance().clear()


def config_check(cfg: DictConfig, overrides: Sequence[str]) -> Check:
    """The validation ``train`` runs first (same function): a config train would refuse fails here too."""
    from vldac_lightning.utils.config import ConfigError, validate_config

    try:
        validate_config(cfg)
    except ConfigError as e:
        return Check("config", "fail", f"train would refuse overrides {list(overrides)}: {e}",
                     "change the override the message names, then run the doctor again")
    return Check("config", "ok", f"composed and validated with overrides {list(overrides)}")


def run_checks(cfg: DictConfig, checks: Sequence[Callable[[DictConfig], Check]] = CHECKS) -> list[Check]:
    """Run every check; a check that crashes is reported as a failure, never ends the report."""
    results = []
    for check in checks:
        try:
            results.append(check(cfg))
        except Exception as e:  # a bug or an odd machine must not hide the other checks
            name = check.__name__.removeprefix("check_")
            results.append(Check(name, "fail", f"the check itself crashed: {type(e).__name__}: {e}",
                                 "please report this with the output of the doctor"))
    return results


def render_table(results: Sequence[Check], header: str = "") -> str:
    """Aligned ``status  name  detail`` lines, each non-ok one followed by its fix."""
    width = max(len(r.name) for r in results)
    lines = [header] if header else []
    for r in results:
        lines.append(f"  {r.status.upper() if r.status == 'fail' else r.status:<4}  {r.name:<{width}}  {r.detail}")
        if r.fix and r.status != "ok":
            lines.append(f"  {'':<4}  {'':<{width}}  fix: {r.fix}")
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "warn", "fail")}
    lines.append(f"{counts['ok']} ok, {counts['warn']} warning(s), {counts['fail']} failure(s)")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    """CLI entry point; returns the exit status (1 when a check fails or the config does not compose)."""
    parser = argparse.ArgumentParser(prog="python -m vldac_lightning.doctor", description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print the checks as JSON instead of a table")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides of the run you intend, e.g. model=qwen2_vl_7b")
    args = parser.parse_args(argv)

    from vldac_lightning.utils.choices import check_group_overrides

    error = check_group_overrides(args.overrides)
    cfg = None
    if error is None:
        try:
            cfg = compose_run_config(args.overrides)
        except Exception as e:  # Hydra's own message names the bad override
            error = f"{type(e).__name__}: {e}"
    if cfg is None:
        results = [Check("config", "fail", str(error), "fix the override (see the valid choices above)")]
        header = ""
    else:
        header = f"vldac_lightning doctor: env={cfg.env.id} model.source={cfg.model.source}" + (
            f" model.name_or_path={cfg.model.name_or_path}" if cfg.model.get("name_or_path") else "")
        results = [config_check(cfg, args.overrides), *run_checks(cfg)]
    failed = any(r.status == "fail" for r in results)
    if args.json:
        print(json.dumps({"ok": not failed, "checks": [r.as_dict() for r in results]}, indent=2))
    else:
        print(render_table(results, header))
    return 1 if failed else 0



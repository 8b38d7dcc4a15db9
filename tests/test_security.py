"""Static guards: no code path evaluates or unpickles model output or files; servers stay local."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from tests.conftest import ROOT

SOURCES = sorted([*(ROOT / "vldac_lightning").rglob("*.py"), *(ROOT / "experiments").rglob("*.py"),
                  ROOT / "noxfile.py"])
FORBIDDEN_CALLS = {"eval", "exec", "compile", "__import__"}
FORBIDDEN_ATTRS = {("pickle", "load"), ("pickle", "loads"), ("marshal", "loads"), ("ast", "literal_eval"),
                   ("dill", "load"), ("shelve", "open"), ("yaml", "load"), ("yaml", "unsafe_load")}


def _calls(path: Path) -> list[ast.Call]:
    return [n for n in ast.walk(ast.parse(path.read_text(), str(path))) if isinstance(n, ast.Call)]


def test_no_eval_exec_or_unpickling_in_the_package() -> None:
    offences = []
    for path in SOURCES:
        for call in _calls(path):
            f = call.func
            if isinstance(f, ast.Name) and f.id in FORBIDDEN_CALLS:
                offences.append(f"{path.relative_to(ROOT)}:{call.lineno} {f.id}()")
            if isinstance(f, ast.Attribute) and isinstance(f.value, ast.Name) and (f.value.id, f.attr) in FORBIDDEN_ATTRS:
                offences.append(f"{path.relative_to(ROOT)}:{call.lineno} {f.value.id}.{f.attr}()")
    assert not offences, offences


def test_every_torch_load_is_weights_only() -> None:
    loads = []
    for path in SOURCES:
        for call in _calls(path):
            f = call.func
            if isinstance(f, ast.Attribute) and f.attr == "load" and isinstance(f.value, ast.Name) and f.value.id == "torch":
                weights_only = [k for k in call.keywords if k.arg == "weights_only"]
                loads.append((f"{path.relative_to(ROOT)}:{call.lineno}",
                              bool(weights_only) and isinstance(weights_only[0].value, ast.Constant)
                              and weights_only[0].value.value is True))
    assert loads, "expected at least the checkpoint loader"
    assert all(ok for _, ok in loads), [where for where, ok in loads if not ok]


def test_documented_servers_bind_to_localhost() -> None:
    text = (ROOT / "README.md").read_text() + "".join(p.read_text() for p in (ROOT / "experiments").glob("*.md"))
    commands = re.findall(r"mlflow (?:ui|server)[^\n`]*", text)
    assert commands, "the README documents how to open the MLflow UI"
    assert all("--host 127.0.0.1" in c for c in commands), commands

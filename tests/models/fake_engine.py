"""A generation engine that lives outside the package, for the test that engines plug in by config."""

from __future__ import annotations

from typing import Any

from vldac_lightning.models.engines.hf import HFEngine


class CountingEngine(HFEngine):
    """The hf engine, counting its calls (class-level, so a test can read it after ``train``)."""

    name = "counting"
    calls = 0

    def __init__(self, label: str = "", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.label = label

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        type(self).calls += 1
        return super().generate(*args, **kwargs)

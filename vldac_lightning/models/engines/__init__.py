"""Generation engines behind one seam (base.py): ``hf`` (reference) and ``static`` (fast, default)."""

from vldac_lightning.models.engines.base import DecodeSpec, Generation, GenerationEngine, build_engine

__all__ = ["DecodeSpec", "Generation", "GenerationEngine", "build_engine"]

from vldac_lightning.callbacks.evaluation import PeriodicEvaluation, episode_metrics
from vldac_lightning.callbacks.samples import RolloutSamples

__all__ = ["PeriodicEvaluation", "RolloutSamples", "episode_metrics"]

from vldac_lightning.callbacks.evaluation import PeriodicEvaluation, episode_metrics
from vldac_lightning.callbacks.interrupt import InterruptCheckpoint
from vldac_lightning.callbacks.samples import RolloutSamples

__all__ = ["InterruptCheckpoint", "PeriodicEvaluation", "RolloutSamples", "episode_metrics"]

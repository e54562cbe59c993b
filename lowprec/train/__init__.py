"""Training: typed configs, AdamW + schedules, the jitted step, checkpoints, MFU and the loop."""
from lowprec.train.config import Config, load_config
from lowprec.train.loop import train

__all__ = ["Config", "load_config", "train"]

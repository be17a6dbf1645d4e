"""Two-phase training, feature cache, grid search, losses (issue 4).

``train_run(data, task, arch, out, ...)`` is the library entry point of ``edgeretina train``.
"""
from edgeretina.train.freezing import FreezePolicy, apply_freezing
from edgeretina.train.losses import LossName, make_exp_uwbce, make_loss
from edgeretina.train.two_phase import Arrays, TrainConfig, Trainee, finetune, warmup
from edgeretina.train.run import train_run


__all__ = ["train_run", "TrainConfig", "Arrays", "Trainee", "warmup", "finetune", "FreezePolicy", "apply_freezing",
           "LossName", "make_loss", "make_exp_uwbce"]

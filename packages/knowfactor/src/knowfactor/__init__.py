"""Knowledge Factorization with the InfoMax-Bottleneck (Yang, Ye, Wang; ECCV 2022).

A teacher is factorized into factor networks (a shared common-knowledge network plus one
task-specific network and head per task) that assemble into multi-task networks without fine-tuning.
"""

from knowfactor.backbones import BACKBONES, build_backbone
from knowfactor.configs import CONFIGS, build_kd, build_kf, build_student, build_teacher, get_config
from knowfactor.losses import infomax_loss, infomin_loss, label_smooth_ce, soft_target_kd
from knowfactor.models import (
    AssembledNetwork,
    FactorNetwork,
    KDModel,
    KFModel,
    KFStudent,
    MultiTaskClassifier,
    TaskSpecificNet,
    assemble,
    factor_network,
)

__version__ = "0.1.0"

__all__ = [
    "BACKBONES",
    "CONFIGS",
    "AssembledNetwork",
    "FactorNetwork",
    "KDModel",
    "KFModel",
    "KFStudent",
    "MultiTaskClassifier",
    "TaskSpecificNet",
    "__version__",
    "assemble",
    "build_backbone",
    "build_kd",
    "build_kf",
    "build_student",
    "build_teacher",
    "factor_network",
    "get_config",
    "infomax_loss",
    "infomin_loss",
    "label_smooth_ce",
    "soft_target_kd",
]

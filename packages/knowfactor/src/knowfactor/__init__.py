"""Knowledge Factorization with the InfoMax-Bottleneck (Yang, Ye, Wang; ECCV 2022).

A teacher is factorized into factor networks (a shared common-knowledge network plus one
task-specific network and head per task) that assemble into multi-task networks without fine-tuning.
"""

from importlib.metadata import version

from knowfactor.backbones import BACKBONES, build_backbone
from knowfactor.config import CONFIGS, PRESETS, TrainConfig, build_config, get_config
from knowfactor.engine import assemble_factors, evaluate_file, fit, load_factor, load_network
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
    build_kd,
    build_kf,
    build_student,
    build_teacher,
    factor_network,
)

__version__ = version("reprozoo-knowfactor")

__all__ = [
    "BACKBONES",
    "CONFIGS",
    "PRESETS",
    "AssembledNetwork",
    "FactorNetwork",
    "KDModel",
    "KFModel",
    "KFStudent",
    "MultiTaskClassifier",
    "TaskSpecificNet",
    "TrainConfig",
    "__version__",
    "assemble",
    "assemble_factors",
    "build_backbone",
    "build_config",
    "build_kd",
    "build_kf",
    "build_student",
    "build_teacher",
    "evaluate_file",
    "factor_network",
    "fit",
    "get_config",
    "infomax_loss",
    "infomin_loss",
    "label_smooth_ce",
    "load_factor",
    "load_network",
    "soft_target_kd",
]

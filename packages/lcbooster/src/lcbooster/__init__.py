"""LC-Booster: reliable label correction on top of DivideMix co-divide training (arXiv 2205.00186)."""

from importlib.metadata import version

from lcbooster.config import TrainConfig, build_config
from lcbooster.correction import CorrectionResult, reliable_label_correction
from lcbooster.data import (
    ImageData,
    load_cifar,
    load_clothing1m,
    load_embedded,
    load_images,
    load_webvision,
    write_cifar_pickles,
)
from lcbooster.engine import CoTrainer, TrainData, evaluate_file, fit, load_final
from lcbooster.models import build_model, preact_resnet18, preact_resnet34, resnet50, small_cnn
from lcbooster.noise import asymmetric_noise, load_noisy_labels, save_noisy_labels, symmetric_noise
from lcbooster.selection import gmm_clean_probability
from lcbooster.transforms import Views

__version__ = version("reprozoo-lcbooster")

__all__ = [
    "CoTrainer",
    "CorrectionResult",
    "ImageData",
    "TrainConfig",
    "TrainData",
    "Views",
    "asymmetric_noise",
    "build_config",
    "build_model",
    "evaluate_file",
    "fit",
    "gmm_clean_probability",
    "load_cifar",
    "load_clothing1m",
    "load_embedded",
    "load_final",
    "load_images",
    "load_noisy_labels",
    "load_webvision",
    "preact_resnet18",
    "preact_resnet34",
    "reliable_label_correction",
    "resnet50",
    "save_noisy_labels",
    "small_cnn",
    "symmetric_noise",
    "write_cifar_pickles",
]

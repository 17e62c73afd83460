"""Probabilistic Teacher for domain-adaptive object detection (Chen et al., ICML 2022, arXiv 2206.06293)."""

from importlib.metadata import version

from probteacher.config import PRESETS, TASKS, TrainConfig, build_config
from probteacher.data import CocoDetection, VOCDetection, load_dataset, parse_voc_xml, write_voc_xml
from probteacher.engine import evaluate, evaluate_file, fit, load_detector
from probteacher.evaluation import coco_map, evaluate_detections, voc_ap
from probteacher.models import SIZES, DetectorConfig, ProbabilisticFasterRCNN, build_detector
from probteacher.toy import make_toy_fog

__version__ = version("reprozoo-probteacher")

__all__ = [
    "PRESETS",
    "SIZES",
    "TASKS",
    "CocoDetection",
    "DetectorConfig",
    "ProbabilisticFasterRCNN",
    "TrainConfig",
    "VOCDetection",
    "__version__",
    "build_config",
    "build_detector",
    "coco_map",
    "evaluate",
    "evaluate_detections",
    "evaluate_file",
    "fit",
    "load_dataset",
    "load_detector",
    "make_toy_fog",
    "parse_voc_xml",
    "voc_ap",
    "write_voc_xml",
]

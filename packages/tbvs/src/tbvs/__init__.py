"""Text-based video segmentation with motion (Zhao et al., CVPR 2022, arXiv 2204.02547)."""

from importlib.metadata import version

from tbvs.config import PRESETS, TrainConfig, build_config
from tbvs.data import ClipDataset, prepare_a2d, prepare_jhmdb
from tbvs.engine import LoadedModel, Segmenter, evaluate, evaluate_file, fit, load_model
from tbvs.flow import estimate_video_flow, flow_to_rgb, write_flow_folders
from tbvs.losses import TBVSLoss
from tbvs.metrics import SegMeter
from tbvs.models import ARCHS, VARIANTS, TBVSArch, TBVSNet, TBVSOutput, build_arch, create_model
from tbvs.synthetic import make_synthetic
from tbvs.text import BertWordPieceTokenizer, HFBertEncoder, TinyTextEncoder, WordTokenizer

__version__ = version("reprozoo-tbvs")

__all__ = [
    "ARCHS",
    "PRESETS",
    "VARIANTS",
    "BertWordPieceTokenizer",
    "ClipDataset",
    "HFBertEncoder",
    "LoadedModel",
    "SegMeter",
    "Segmenter",
    "TBVSArch",
    "TBVSLoss",
    "TBVSNet",
    "TBVSOutput",
    "TinyTextEncoder",
    "TrainConfig",
    "WordTokenizer",
    "__version__",
    "build_arch",
    "build_config",
    "create_model",
    "estimate_video_flow",
    "evaluate",
    "evaluate_file",
    "fit",
    "flow_to_rgb",
    "load_model",
    "make_synthetic",
    "prepare_a2d",
    "prepare_jhmdb",
    "write_flow_folders",
]

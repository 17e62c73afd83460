"""SlimDA: Slimmable Domain Adaptation (Meng et al., CVPR 2022), re-implemented.

A weight-sharing model bank (slimmable ResNet / CNN) trained for unsupervised domain adaptation with SymNets'
domain confusion, Stochastic EnsEmble Distillation (SEED) and the Optimization-Separated Tri-Classifier
(OSTC); architectures are chosen per MACs budget by the label-free UPEM and exported as plain PyTorch models.
"""

from importlib.metadata import version

from slimda.bn import recalibrate_bn
from slimda.config import TrainConfig, build_config
from slimda.data import Domain, check_same_classes, load_domain, load_embedded
from slimda.engine import Evaluator, Trainer, fit, load_bank
from slimda.export import export_architecture
from slimda.flops import count_macs, count_params, largest_uniform_width, parse_budget
from slimda.models import Arch, ModelBank, SlimCNN, SlimResNet, load_torchvision_weights
from slimda.sampling import ArchSampler
from slimda.upem import kendall_tau, run_selection, select_by_upem, upem_score

__version__ = version("reprozoo-slimda")
__all__ = [
    "Arch",
    "ArchSampler",
    "Domain",
    "Evaluator",
    "ModelBank",
    "SlimCNN",
    "SlimResNet",
    "TrainConfig",
    "Trainer",
    "__version__",
    "build_config",
    "check_same_classes",
    "count_macs",
    "count_params",
    "export_architecture",
    "fit",
    "kendall_tau",
    "largest_uniform_width",
    "load_bank",
    "load_domain",
    "load_embedded",
    "load_torchvision_weights",
    "parse_budget",
    "recalibrate_bn",
    "run_selection",
    "select_by_upem",
    "upem_score",
]

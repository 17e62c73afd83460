"""FaceMAE (Wang, Zhao et al., arXiv 2205.11090): privacy-preserving face recognition through MAE reconstruction."""

from importlib.metadata import version

from facemae.data import (
    ImageFolderFaces,
    RecordIOReader,
    RecordIOWriter,
    VerificationPairs,
    load_lfw_subset,
    read_verification_bin,
    write_image_folder,
    write_verification_bin,
)
from facemae.losses import irm_loss, margin_logits, margin_softmax_loss, reconstruction_loss
from facemae.metrics import leak_rates, psnr, ssim, verification_accuracy
from facemae.models import (
    IResNet,
    MarginHead,
    MaskedAutoencoderViT,
    iresnet18,
    iresnet34,
    iresnet50,
    iresnet100,
    iresnet_mini,
    mae_vit_base_patch16,
    mae_vit_huge_patch14,
    mae_vit_large_patch16,
    mae_vit_small_patch8,
    mae_vit_tiny_patch4,
)
from facemae.synthetic import synthetic_faces, synthetic_pairs, write_synthetic_faces

__version__ = version("reprozoo-facemae")

__all__ = [
    "IResNet",
    "ImageFolderFaces",
    "MarginHead",
    "MaskedAutoencoderViT",
    "RecordIOReader",
    "RecordIOWriter",
    "VerificationPairs",
    "__version__",
    "iresnet18",
    "iresnet34",
    "iresnet50",
    "iresnet100",
    "iresnet_mini",
    "irm_loss",
    "leak_rates",
    "load_lfw_subset",
    "mae_vit_base_patch16",
    "mae_vit_huge_patch14",
    "mae_vit_large_patch16",
    "mae_vit_small_patch8",
    "mae_vit_tiny_patch4",
    "margin_logits",
    "margin_softmax_loss",
    "psnr",
    "read_verification_bin",
    "reconstruction_loss",
    "ssim",
    "synthetic_faces",
    "synthetic_pairs",
    "verification_accuracy",
    "write_image_folder",
    "write_synthetic_faces",
    "write_verification_bin",
]

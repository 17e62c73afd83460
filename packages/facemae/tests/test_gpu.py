"""On a CUDA device: both stages train under AMP, and a release made there equals the CPU's."""

import pytest
import torch

from facemae.config import build_config
from facemae.data import open_faces
from facemae.engine import fit, load_mae, mask_seed, read_faces, release_images

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]
CUDA = torch.device("cuda")


def test_both_stages_train_under_amp_on_cuda(tiny_split, tmp_path):
    mae = build_config(
        "mae", "demo", data=tiny_split.source_folder, epochs=2, warmup_epochs=1, phi_epochs=1, amp=True,
        identities_per_batch=4,
    )  # fmt: skip
    results = fit(mae, tmp_path / "mae", CUDA, quiet=True)
    assert results["loss_irm"] > 0 and results["psnr_masked"] > 0
    fr = build_config("fr", "demo", data=tiny_split.target_folder, val=[tiny_split.pairs], epochs=2, amp=True)
    assert 0 <= fit(fr, tmp_path / "fr", CUDA, quiet=True)["verification"]["synthetic_pairs"]["accuracy"] <= 1
    pixels = read_faces(open_faces(tiny_split.target_folder, 32))[0][:16]
    seeds = [mask_seed(0, i, 0) for i in range(16)]
    model = load_mae(tmp_path / "mae" / "final.pt")[0]
    on_gpu = release_images("mae", pixels, seeds, mae=model, device=CUDA)
    on_cpu = release_images("mae", pixels, seeds, mae=model, device=torch.device("cpu"))
    assert (on_gpu.int() - on_cpu.int()).abs().max() <= 2  # same masks; float rounding only

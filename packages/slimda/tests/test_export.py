"""Exported architectures: same logits as the bank, torchvision key names, runnable without slimda."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torchvision

from shared.errors import UserError
from slimda import standalone
from slimda.export import export_architecture
from slimda.flops import count_params
from slimda.models import Arch, ModelBank, SlimmableBatchNorm2d

K = 5
SIZES = {"resnet18": 64, "resnet50": 64, "slimcnn": 16}
ARCHS = {  # stage-wise; resnet50's off-grid 0.3 rounds a bottleneck's 64 → 19 but its 256 → 77 ≠ 4·19
    "resnet18": Arch((0.375, 0.11, 0.625, 0.1875)),
    "resnet50": Arch((0.25, 0.3, 0.11, 0.875, 0.1875)),
    "slimcnn": Arch((0.5, 0.11, 1.0, 0.375)),
}


@pytest.fixture(scope="module")
def banks() -> dict[str, ModelBank]:
    """Random banks whose batch norms have random affine parameters and running statistics of ARCHS[name]."""
    torch.manual_seed(0)
    banks = {}
    for name, size in SIZES.items():
        bank = ModelBank(name, K)
        for module in bank.modules():
            if isinstance(module, SlimmableBatchNorm2d):
                torch.nn.init.uniform_(module.weight, 0.5, 1.5)
                torch.nn.init.uniform_(module.bias, -0.5, 0.5)
        bank.set_arch(ARCHS[name]).train()
        with torch.no_grad():
            for _ in range(3):
                bank(torch.randn(4, 3, size, size))
        banks[name] = bank.eval()
    return banks


def bank_logits(bank: ModelBank, arch: Arch, head: str, x: torch.Tensor) -> torch.Tensor:
    previous = bank.arch
    with torch.no_grad():
        logits = getattr(bank.set_arch(arch)(x), head)
    bank.set_arch(previous)
    return logits


@pytest.mark.parametrize(
    ("name", "head"),
    [("resnet18", "ct"), ("resnet50", "cs"), ("slimcnn", "ca"), ("slimcnn", "ct")],
)
def test_export_gives_the_bank_logits(banks, tmp_path, name, head):
    bank, arch, size = banks[name], ARCHS[name], SIZES[name]
    bank.set_arch(bank.full_arch())  # the export slices at its argument, not at the bank's current arch
    folder = export_architecture(bank, arch, tmp_path / "out", head=head, meta={"budget": "1/16"})
    assert bank.arch == bank.full_arch()
    model = standalone.load(folder)
    assert not model.training
    x = torch.randn(3, 3, size, size)
    with torch.no_grad():  # fp32 through up to 50 layers: a relative tolerance too, for logits far from 0
        torch.testing.assert_close(model(x), bank_logits(bank, arch, head, x), atol=1e-5, rtol=1e-5)

    state = torch.load(folder / "weights.pt", weights_only=True)
    expected_keys = set(bank.backbone.state_dict()) | {"fc.weight", "fc.bias"}
    assert set(state) == expected_keys
    if name != "slimcnn":  # torchvision's names; a sliced resnet keeps every one of them
        assert set(state) == set(getattr(torchvision.models, name)().state_dict())
    for tensor in state.values():  # slices were saved on their own, not as views of the full tensors
        assert tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
    assert sum(p.numel() for p in model.parameters()) == count_params(bank, arch)

    spec = json.loads((folder / "arch.json").read_text())
    assert (spec["arch"], spec["head"], spec["meta"]) == (str(arch), head, {"budget": "1/16"})
    assert (folder / "model.py").read_text() == Path(standalone.__file__).read_text()


def test_exported_folders_run_without_slimda(banks, tmp_path):
    for name, size in SIZES.items():
        folder = export_architecture(banks[name], ARCHS[name], tmp_path / name)
        x = torch.randn(2, 3, size, size)
        torch.save({"x": x, "logits": bank_logits(banks[name], ARCHS[name], "ct", x)}, folder / "check.pt")
    code = f"""
import sys, importlib.util, torch
sys.modules["slimda"] = None
sys.modules["shared"] = None
for name in {list(SIZES)!r}:
    folder = {str(tmp_path)!r} + "/" + name
    spec = importlib.util.spec_from_file_location("model_" + name, folder + "/model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    net = module.load(folder)
    check = torch.load(folder + "/check.pt", weights_only=True)
    with torch.no_grad():
        torch.testing.assert_close(net(check["x"]), check["logits"], atol=1e-5, rtol=0)
    print(name, type(net).__name__)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["resnet18", "ResNet", "resnet50", "ResNet", "slimcnn", "SmallCNN"]


def test_full_width_resnet50_loads_into_torchvision(banks, tmp_path):
    bank = banks["resnet50"]
    folder = export_architecture(bank, bank.full_arch(), tmp_path / "out", head="ct")
    reference = torchvision.models.resnet50(num_classes=K)
    reference.load_state_dict(torch.load(folder / "weights.pt", weights_only=True), strict=True)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():  # logits of about 20 differ by a few float32 ulps between the two implementations
        torch.testing.assert_close(
            reference.eval()(x), bank_logits(bank, bank.full_arch(), "ct", x), atol=1e-5, rtol=1e-5
        )


def test_export_into_an_empty_existing_folder(banks, tmp_path):
    (tmp_path / "out").mkdir()
    folder = export_architecture(banks["slimcnn"], ARCHS["slimcnn"], tmp_path / "out")
    assert sorted(p.name for p in folder.iterdir()) == ["arch.json", "model.py", "weights.pt"]


def test_refuses_to_overwrite_a_non_empty_folder(banks, tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(UserError, match="not an empty folder"):
        export_architecture(banks["slimcnn"], ARCHS["slimcnn"], tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["keep.txt"]
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize(("head", "message"), [("folded", "not a linear layer.*ct, cs or ca"), ("cx", "unknown head")])
def test_refuses_a_head_that_is_not_a_plain_linear(banks, tmp_path, head, message):
    with pytest.raises(UserError, match=message):
        export_architecture(banks["slimcnn"], ARCHS["slimcnn"], tmp_path / "out", head=head)
    assert not (tmp_path / "out").exists()

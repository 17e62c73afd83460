"""Export one architecture of a model bank as a plain, self-contained network folder.

The folder holds ``model.py`` (a copy of :mod:`slimda.standalone`, which imports only torch), ``arch.json`` (its
spec, the architecture, the head and the caller's metadata) and ``weights.pt`` (a torchvision-style state_dict:
the bank's weight prefixes at that architecture and one K-way ``fc``). ``model.load(folder)`` rebuilds it.
:func:`export_file` exports from a saved bank, BN recalibrated on its run's images (what ``slimda-export`` does).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from shared.checkpoint import atomic_write, save_json
from shared.errors import UserError
from slimda import standalone
from slimda.engine import domains_of_run, load_bank, make_evaluator
from slimda.flops import layer_channels
from slimda.models import Arch, ModelBank

HEADS = ("ct", "cs", "ca")


def export_architecture(bank: ModelBank, arch: Arch, out: Path, head: str = "ct", meta: dict | None = None) -> Path:
    """Write the sub-network ``arch`` of ``bank`` with the linear ``head`` (Ct, Cs or Ca) to the new folder ``out``.

    Batch-norm running statistics are copied as they are: recalibrate the bank at ``arch`` first
    (:func:`slimda.bn.recalibrate_bn`). The bank itself, including its current architecture, is left unchanged.
    """
    if head not in HEADS:
        if head == "folded":
            raise UserError(
                "the folded head (q_k = P_k + P_{K+k}) is not a linear layer and cannot be exported: "
                "export --head ct, cs or ca"
            )
        raise UserError(f"unknown head {head!r}: export one of {', '.join(HEADS)}")
    out = check_new_folder(out)
    sizes = layer_channels(bank, arch)
    state = {}
    for key, tensor in bank.backbone.state_dict().items():
        cin, cout = sizes[key.rpartition(".")[0]]
        state[key] = tensor[:cout, :cin] if tensor.dim() == 4 else tensor[:cout] if tensor.dim() == 1 else tensor
    weight, bias = _head(bank, head)
    state["fc.weight"], state["fc.bias"] = weight[:, : bank.feature_dim(arch)], bias
    # clone: torch.save writes a view's whole storage, i.e. the full-width tensor
    state = {key: tensor.detach().cpu().clone() for key, tensor in state.items()}
    spec = {
        "model": bank.backbone_name,
        "num_classes": bank.num_classes,
        "in_chans": next(bank.slimmable_convs()).in_channels,
        "channels": _channels(bank.backbone_name, sizes),
        "arch": str(arch),
        "head": head,
        "meta": meta or {},
    }
    source = Path(standalone.__file__).read_text()
    atomic_write(out / "model.py", lambda f: f.write(source), binary=False)
    save_json(out / "arch.json", spec)
    atomic_write(out / "weights.pt", lambda f: torch.save(state, f))
    return out


def export_file(
    weights: str | os.PathLike,
    arch: str,
    out: str | os.PathLike,
    device: torch.device,
    *,
    head: str | None = None,
    data: str | os.PathLike | None = None,
) -> dict:
    """Export ``arch`` of the bank saved in ``weights`` to the new folder ``out``, after recalibrating its BN on
    the run's calibration images; returns the folder, the architecture, the head and its target accuracy."""
    out = check_new_folder(out)
    bank, config, meta = load_bank(weights)
    chosen = bank.parse_arch(arch)
    head = head or config.head
    if head not in HEADS:
        raise UserError(f"the run reports head {head!r}, which is not a plain linear layer: pass --head ct, cs or ca")
    source, target = domains_of_run(config, meta, data)
    evaluator = make_evaluator(bank.to(device), config, source, target, device)
    accuracy = evaluator.accuracy(evaluator.outputs(chosen))[head]
    info = {
        "classes": meta["classes"],
        "crop": config.crop,
        "image_size": config.image_size,
        "normalise": "imagenet",
        "target_accuracy": accuracy,
        "source": meta["source"],
        "target": meta["target"],
    }
    folder = export_architecture(bank.cpu(), chosen, out, head=head, meta=info)
    return {"out": str(folder), "arch": str(chosen), "head": head, "accuracy": accuracy}


def check_new_folder(out: str | os.PathLike) -> Path:
    """``out`` as a Path, refused if it exists and is not an empty folder (an export never overwrites)."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise UserError(f"{out} already exists and is not an empty folder: export to a new folder")
    return out


def _head(bank: ModelBank, head: str) -> tuple[torch.Tensor, torch.Tensor]:
    """Weight and bias of Ct (rows K..2K−1 of ``fc``), Cs (rows 0..K−1) or Ca (``fc_aux``)."""
    if head == "ca":
        return bank.heads.fc_aux.weight, bank.heads.fc_aux.bias
    rows = slice(bank.num_classes, None) if head == "ct" else slice(None, bank.num_classes)
    return bank.heads.fc.weight[rows], bank.heads.fc.bias[rows]


def _channels(model: str, sizes: dict[str, tuple[int, int]]) -> dict[str, int | list[int]]:
    """The ``channels`` entry of :mod:`slimda.standalone`'s spec, read off the output channels at the arch."""
    if model == "slimcnn":
        return {"features": [cout for name, (_, cout) in sizes.items() if name.endswith(".0")]}
    last = "conv3" if model == "resnet50" else "conv2"
    return {
        "stem": sizes["conv1"][1],
        "mid": [sizes[f"layer{s}.0.conv1"][1] for s in range(1, 5)],
        "out": [sizes[f"layer{s}.0.{last}"][1] for s in range(1, 5)],
    }

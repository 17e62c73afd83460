"""Does PT's unsupervised loss point where the target's true labels would? A diagnosis at the start of adaptation.

For each seed of a ``probteacher-repro`` folder: the burn-in checkpoint as student and teacher (as PT starts),
then over ``--batches`` target batches the student's gradient of

- ``unsup``: the unsupervised loss on the strong target views with the teacher's soft pseudo-labels (PT);
- ``hard``: the supervised loss with the teacher's boxes of class probability >= 0.7 (the ablation);
- ``oracle``: the supervised loss with the true target boxes (never available to PT; the toy set has them);
- ``source``: the supervised loss on a source batch (strong view pasted, weak view not, as in adaptation).

Prints the cosine of each summed gradient with the oracle's, and the gradients' norms (anchors excluded).
Scale-down paste of the target view is left out so the oracle boxes need no transform.

    OMP_NUM_THREADS=2 python packages/probteacher/benchmarks/target_gradient.py --out runs/pt-repro --threads 2
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from torch.nn.functional import cosine_similarity

from probteacher.data import InfiniteBatches
from probteacher.engine import (
    _anchor_parameters,
    _box_target,
    _generator,
    _with_boxes,
    build_models,
    load_split,
    resolve_data,
    source_views,
)
from probteacher.pseudo import teacher_pseudo_labels
from probteacher.repro import burn_in_checkpoint, run_config
from probteacher.transforms import strong_view, weak_view
from shared.checkpoint import load_checkpoint

KINDS = ("unsup", "hard", "oracle", "source")


def gradients(seed: int, checkpoint: Path, preset: str, batches: int) -> dict[str, torch.Tensor]:
    """The summed gradients of :data:`KINDS` over ``batches`` target (and source) batches."""
    config = run_config(preset, "pt", seed)
    device = torch.device("cpu")
    student, teacher = build_models(config, device)
    state = load_checkpoint(checkpoint, map_location="cpu")["model"]
    student.load_state_dict(state)
    teacher.load_state_dict(state)
    specs, names = resolve_data(config, quiet=True), config.class_names
    targets = InfiniteBatches(load_split(specs["target"], names, "target"), config.batch_target, seed + 100)
    sources = InfiniteBatches(
        _with_boxes(load_split(specs["source"], names, "source"), specs["source"]), config.batch_source, seed + 200
    )
    anchors = {id(p) for p in _anchor_parameters(student)}
    params = [p for p in student.parameters() if p.requires_grad and id(p) not in anchors]

    def grad(losses: dict[str, torch.Tensor]) -> torch.Tensor:
        parts = torch.autograd.grad(sum(losses.values()), params, allow_unused=True)
        flat = [(g if g is not None else torch.zeros_like(p)).flatten() for g, p in zip(parts, params, strict=True)]
        return torch.cat(flat)

    total = dict.fromkeys(KINDS, 0.0)
    for i in range(batches):
        g = _generator(seed, 10_000 + i, 0)
        weak, strong, truth = [], [], []
        for image, record in zip(*next(targets), strict=True):
            view, boxes = weak_view(image, _box_target(record, device), g)
            weak.append(view), strong.append(strong_view(view, g)), truth.append(boxes)
        with torch.no_grad():
            soft = teacher_pseudo_labels(teacher, weak)
            hard = teacher_pseudo_labels(teacher, weak, hard_threshold=0.7)
        source_images, source_labels = source_views(*next(sources), g, device, paste_weak=False, paste_strong=True)
        step = {
            "unsup": grad(student(strong, soft, mode="unsupervised")),
            "oracle": grad(student(strong, truth, mode="supervised")),
            "source": grad(student(source_images, source_labels, mode="supervised")),
        }
        any_hard = any(len(h["boxes"]) for h in hard)
        step["hard"] = grad(student(strong, hard, mode="supervised")) if any_hard else torch.zeros_like(step["oracle"])
        total = {k: total[k] + step[k] for k in KINDS}
    return total


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the probteacher-repro output folder")
    parser.add_argument("--preset", default="demo", help="the repro's preset (default: demo)")
    parser.add_argument("--batches", type=int, default=20, help="target batches per seed (default: 20)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    seeds = json.loads((args.out / "results.json").read_text())["seeds"]
    for seed in range(seeds):
        total = gradients(seed, burn_in_checkpoint(args.out, args.preset, seed), args.preset, args.batches)
        oracle = total["oracle"]
        others = [k for k in KINDS if k != "oracle"]
        cosines = ", ".join(f"{k} {float(cosine_similarity(total[k], oracle, dim=0)):+.3f}" for k in others)
        norms = ", ".join(f"{k} {float(total[k].norm()):.1f}" for k in KINDS)
        print(f"seed {seed}: cosine with the oracle gradient: {cosines}; norms: {norms}", flush=True)


if __name__ == "__main__":
    main()

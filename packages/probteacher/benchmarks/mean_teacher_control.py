"""How much of PT's gain over source-only is the EMA teacher itself? A control for ``probteacher-repro``.

A mean teacher that never looks at the target: the PT run of each seed with ``target_weight`` 0 (no
unsupervised loss; the student trains on the adaptation phase's source views, the teacher is its EMA), branched
from the same burn-in checkpoint as the repro's runs. Its teacher's fogged-target AP50 against the repro's
source-only student and PT teacher separates weight averaging from adaptation. Reads the repro's folder
(run ``probteacher-repro --out OUT`` first), trains one short run per seed into ``OUT/controls``, prints a table.

    OMP_NUM_THREADS=2 python packages/probteacher/benchmarks/mean_teacher_control.py --out runs/pt-repro --threads 2
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from probteacher.engine import fit
from probteacher.repro import burn_in_checkpoint, run_config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="the probteacher-repro output folder")
    parser.add_argument("--preset", default="demo", help="the repro's preset (default: demo)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    repro = json.loads((args.out / "results.json").read_text())
    rows = []
    for seed in range(repro["seeds"]):
        burn_in = burn_in_checkpoint(args.out, args.preset, seed)
        folder = args.out / "controls" / f"mean_teacher_source_only-seed{seed}"
        if (folder / "results.json").is_file():
            result = json.loads((folder / "results.json").read_text())
        else:
            config = dataclasses.replace(run_config(args.preset, "pt", seed), target_weight=0.0)
            result = fit(config, folder, torch.device("cpu"), quiet=True, start_from=burn_in)
        target = {which: result["target_test"][which]["AP50"] for which in ("student", "teacher")}
        rows.append([repro["target_ap50"]["source_only"][seed], target["student"], target["teacher"]])
        rows[-1].append(repro["target_ap50"]["pt"][seed])
        print(f"seed {seed}: " + ", ".join(f"{v:.3f}" for v in rows[-1]), flush=True)
    values = np.array(rows)
    names = ["source-only", "mean teacher w/o target: student", "mean teacher w/o target: teacher", "PT teacher"]
    print("\nfogged target AP50, mean ± std over seeds")
    for name, column in zip(names, values.T, strict=True):
        print(f"  {name}: {column.mean():.3f} ± {column.std(ddof=1) if len(column) > 1 else 0:.3f}")
    gain = values[:, 3] - values[:, 2]
    per_seed = ", ".join(f"{g:+.3f}" for g in gain)
    print(f"  PT teacher − mean teacher w/o target: {gain.mean():+.3f} (per seed {per_seed})")


if __name__ == "__main__":
    main()

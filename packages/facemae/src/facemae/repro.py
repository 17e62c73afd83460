"""``facemae-repro``: does IRM buy recognition accuracy at the same privacy? FaceMAE against its ablation and baselines.

The claim of FaceMAE (arXiv 2205.11090, abstract): a recogniser trained on MAE reconstructions of masked faces of
unseen people verifies far better than one trained on earlier privacy-preserving releases, the IRM term narrows
the gap to real faces, and reconstructed faces are hard to retrieve. Per seed, on synthetic faces (source and
target identities disjoint, verification pairs of further identities):

1. :func:`facemae.engine.fit` of FaceMAE (MAE + IRM, phi trained on the source originals) and of MAE-only
   (lambda_irm = 0), same schedule and seed;
2. the target set released five ways at the same per-image masks: ``original``, ``masked``, ``blur``, ``mae``,
   ``facemae`` (:func:`facemae.engine.reconstruct_dataset`);
3. the demo recogniser trained on each release, its 10-fold verification accuracy on the held-out pairs;
4. instance and identity leak@1 of each release against the originals, for an attacker that is the recogniser
   trained on the original target faces (:func:`facemae.engine.privacy_report`).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from facemae import __version__
from facemae.config import FRConfig, MAEConfig, build_config
from facemae.data import open_faces
from facemae.engine import (
    balanced_order,
    evaluate_mae,
    fit,
    load_mae,
    load_recognizer,
    privacy_report,
    read_faces,
    read_release,
    reconstruct_dataset,
)
from facemae.synthetic import SyntheticSplit, write_synthetic_faces
from shared.errors import UserError
from shared.logging import get_logger
from shared.report import RunCache, format_ci95, format_mean_std, markdown_table, mean_std, plot_bars, write_results

VARIANTS = {
    "original": "original faces",
    "masked": "masked faces",
    "blur": "Gaussian blur",
    "mae": "MAE only (λ_IRM = 0)",
    "facemae": "FaceMAE (MAE + λ_IRM IRM)",
}
FACE_SIZE = 32
#: Scale of each preset: the synthetic split (identities, images each) and the epochs of every run.
SCALES = {
    "demo": {
        "split": {"source": (32, 16), "target": (30, 16), "pair_identities": 20, "pairs": 400},
        "mae_epochs": 20,
        "phi_epochs": 4,
        "fr_epochs": 6,
        "fr_steps": [4],
    },
    "small": {
        "split": {"source": (100, 20), "target": (60, 20), "pair_identities": 40, "pairs": 1200},
        "mae_epochs": 60,
        "phi_epochs": 8,
        "fr_epochs": 16,
        "fr_steps": [12],
    },
}
PRESET_HELP = {
    name: f"{s['split']['source'][0]} source / {s['split']['target'][0]} target identities, {s['split']['pairs']} "
    f"pairs at {FACE_SIZE}px; MAE {s['mae_epochs']} epochs, recognisers {s['fr_epochs']}"
    for name, s in SCALES.items()
}
MAE_TABLE_TITLE = (
    "The MAEs on the unseen target faces (each face with its own mask; L_IRM through the FaceMAE run's phi)"
)


def mae_config(preset: str, split: SyntheticSplit, lambda_irm: float, mask_ratio: float, seed: int) -> MAEConfig:
    scale = SCALES[preset]
    return build_config(
        "mae",
        "demo",
        data=split.source_folder,
        phi_val=[split.pairs],
        epochs=scale["mae_epochs"],
        warmup_epochs=max(1, scale["mae_epochs"] // 10),
        phi_epochs=scale["phi_epochs"],
        lambda_irm=lambda_irm,
        mask_ratio=mask_ratio,
        seed=seed,
    )


def fr_config(preset: str, release: Path, pairs: Path, seed: int) -> FRConfig:
    scale = SCALES[preset]
    return build_config(
        "fr",
        "demo",
        data=release,
        val=[pairs],
        epochs=scale["fr_epochs"],
        lr_steps=scale["fr_steps"],
        eval_every=scale["fr_epochs"],
        seed=seed,
    )


def run(
    out: Path,
    device: torch.device,
    *,
    seeds: int = 3,
    preset: str = "demo",
    mask_ratio: float = 0.75,
    lambda_irm: float | None = None,
) -> dict:
    """Every variant for every seed (reusing runs recorded in ``out/runs``); writes ``results.json``,
    ``results.md`` and ``results.png`` into ``out``."""
    if preset not in SCALES:
        raise UserError(f"unknown preset {preset!r}: choose one of {', '.join(SCALES)}")
    lambda_irm = build_config("mae", "demo", lambda_irm=lambda_irm).lambda_irm  # default: the demo preset's
    if not 0 < mask_ratio < 1 or lambda_irm <= 0:
        raise UserError(f"need --mask-ratio in (0, 1) and --lambda-irm > 0, got {mask_ratio} and {lambda_irm}")
    log = get_logger()
    started = time.monotonic()
    split = write_synthetic_faces(out / "data" / preset, size=FACE_SIZE, **SCALES[preset]["split"])
    target = open_faces(split.target_folder, FACE_SIZE)
    originals, labels = read_faces(target)
    cache = RunCache(out / "runs", __version__)
    batches = mae_config(preset, split, 1.0, mask_ratio, 0)
    target_order = originals[balanced_order(labels.tolist(), batches)]  # identity-balanced batches for IRM
    trained: list[str] = []
    runs: dict[str, list[dict]] = {v: [] for v in VARIANTS}
    mae_runs: dict[str, list[dict]] = {"mae": [], "facemae": []}
    for seed in range(seeds):
        maes = {}
        for name, weight in (("mae", 0.0), ("facemae", lambda_irm)):
            config = mae_config(preset, split, weight, mask_ratio, seed)
            run_name = f"train-{name}-seed{seed}"

            def train(config=config, run_name=run_name) -> dict:
                trained.append(run_name)
                return fit(config, cache.fresh_folder(run_name), device, quiet=True)

            mae_runs[name].append(cache.run(run_name, {"config": config}, train))
            maes[name] = (cache.folder / run_name / "final.pt", config)
        phi = cache.folder / f"train-facemae-seed{seed}" / "phi" / "final.pt"  # trained on the source originals
        for name, run in maes.items():
            mae_runs[name][-1] |= {"target": held_out(run, phi, target_order, device)}
        attacker_run = cache.folder / f"release-original-seed{seed}" / "fr"
        for variant in VARIANTS:
            run_name = f"release-{variant}-seed{seed}"
            fr = fr_config(preset, cache.folder / run_name / "release", split.pairs, seed)
            weights, mae_cfg = maes.get(variant, (None, None))
            key = {"fr": fr, "mae": mae_cfg, "mask_ratio": mask_ratio, "attacker": attacker_run.parent.name}

            def release_and_train(
                variant=variant, run_name=run_name, fr=fr, weights=weights, seed=seed, attacker_run=attacker_run
            ) -> dict:
                trained.append(run_name)
                folder = cache.fresh_folder(run_name)
                mae = load_mae(weights)[0] if weights is not None else None
                manifest = reconstruct_dataset(
                    "mae" if mae is not None else variant,
                    target,
                    folder / "release",
                    folder / "manifest.json",
                    mae=mae,
                    mask_ratio=mask_ratio,
                    seed=seed,
                    device=device,
                    source=str(split.target_folder),
                )
                result = fit(fr, folder / "fr", device, quiet=True)
                if not (attacker_run / "final.pt").is_file():
                    raise UserError(f"{attacker_run / 'final.pt'} is missing: delete {cache.folder} and run again")
                record, released = read_release(manifest)
                sources = torch.tensor([item["source"] for item in record["items"]])
                attacker = load_recognizer(attacker_run / "final.pt")
                leak = privacy_report(attacker, originals, labels, released, sources, device, topk=(1,))
                return {"accuracy": result["verification"]["synthetic_pairs"]["accuracy"], "privacy": leak}

            runs[variant].append(cache.run(run_name, key, release_and_train))
        log.info(f"seed {seed} done ({time.monotonic() - started:.0f} s)")
    seconds = round(time.monotonic() - started, 1)
    table, summary = _table(runs)
    mae_table = _mae_table(mae_runs)
    accuracy = {v: [r["accuracy"] for r in runs[v]] for v in VARIANTS}
    gain = [a - b for a, b in zip(accuracy["facemae"], accuracy["mae"], strict=True)]
    headline = (
        f"verification accuracy FaceMAE {summary['facemae']['accuracy']:.3f}, MAE-only "
        f"{summary['mae']['accuracy']:.3f} (FaceMAE − MAE {format_ci95(gain, 3)}), original "
        f"{summary['original']['accuracy']:.3f}, masked {summary['masked']['accuracy']:.3f}; instance leak@1 "
        f"FaceMAE {summary['facemae']['instance@1']:.3f} vs original {summary['original']['instance@1']:.3f} "
        f"(chance {summary['original']['instance_chance@1']:.4f}); {seeds} seed(s), mask ratio {mask_ratio}, "
        f"λ_IRM {lambda_irm:g}."
    )
    scale = SCALES[preset]
    notes = (
        f"{seeds} seed(s), {preset} preset, λ_IRM {lambda_irm:g}: synthetic faces at {FACE_SIZE}px, "
        f"{len(target)} target faces of "
        f"{len(set(labels.tolist()))} identities released, verification on {scale['split']['pairs']} pairs of "
        f"{scale['split']['pair_identities']} further identities (10 folds). MAE {scale['mae_epochs']} epochs, phi "
        f"{scale['phi_epochs']}, each recogniser {scale['fr_epochs']}. Mean ± std over seeds. Leak@1: share of "
        "released faces whose nearest original (attacker: the recogniser trained on the original release, cosine) "
        "is their own source (instance) or of their identity (identity); PSNR of each release against its source. "
        f"Wall time {seconds:.0f} s with {torch.get_num_threads()} thread(s)"
        f"{_reuse(trained, seeds, out)}."
    )
    figure = plot_bars(
        out / "results.png",
        list(VARIANTS),
        {
            "verification accuracy": [accuracy[v] for v in VARIANTS],
            "instance leak@1": [[r["privacy"]["instance@1"] for r in runs[v]] for v in VARIANTS],
            "identity leak@1": [[r["privacy"]["identity@1"] for r in runs[v]] for v in VARIANTS],
        },
        ylabel="share",
        title=f"Utility and leakage of each release (synthetic faces, mask ratio {mask_ratio}, {seeds} seed(s))",
    )
    results = {"summary": summary, "runs": runs, "mae_runs": mae_runs, "facemae_minus_mae": gain}
    results |= {"seeds": seeds, "preset": preset, "mask_ratio": mask_ratio, "lambda_irm": lambda_irm}
    results["seconds"] = seconds
    results |= {"threads": torch.get_num_threads(), "trained_runs": len(trained)}
    write_results(
        out,
        title="FaceMAE reproduction (synthetic faces, CPU)",
        table=f"{table}\n\n{MAE_TABLE_TITLE}:\n\n{mae_table}",
        headline=headline,
        notes=notes,
        results=results,
        figure=figure,
    )
    return {**results, "headline": headline}


def held_out(run: tuple[Path, MAEConfig], phi: Path, faces: torch.Tensor, device: torch.device) -> dict:
    """L_rec, L_IRM (through the FaceMAE run's phi) and masked-patch PSNR of an MAE on the unseen target faces."""
    weights, config = run
    mae = load_mae(weights)[0]
    return evaluate_mae(mae, load_recognizer(phi).to(device), faces, config, device)


def _reuse(trained: list[str], seeds: int, out: Path) -> str:
    total = seeds * (len(VARIANTS) + 2)
    reused = total - len(trained)
    return f" ({reused} of the {total} runs reused from {out / 'runs'})" if reused else ""


def _table(runs: dict[str, list[dict]]) -> tuple[str, dict]:
    headers = ["release", "verification accuracy", "instance leak@1", "identity leak@1", "PSNR (dB)"]
    rows, summary = [], {}
    for variant, label in VARIANTS.items():
        privacy = [r["privacy"] for r in runs[variant]]
        columns = {
            "accuracy": [r["accuracy"] for r in runs[variant]],
            "instance@1": [p["instance@1"] for p in privacy],
            "identity@1": [p["identity@1"] for p in privacy],
            "psnr": [p["psnr"] for p in privacy],
        }
        summary[variant] = {name: mean_std(values)[0] for name, values in columns.items()}
        summary[variant] |= {k: privacy[0][k] for k in ("instance_chance@1", "identity_chance@1")}
        cells = [format_mean_std(columns[k], 3) for k in ("accuracy", "instance@1", "identity@1")]
        psnr = "∞ (identical)" if variant == "original" else format_mean_std(columns["psnr"], 2)
        rows.append([label, *cells, psnr])
    first = next(iter(runs.values()))[0]["privacy"]
    rows.append(["chance", "0.500", f"{first['instance_chance@1']:.4f}", f"{first['identity_chance@1']:.3f}", ""])
    return markdown_table(headers, rows), summary


def _mae_table(mae_runs: dict[str, list[dict]]) -> str:
    headers = ["MAE", "masked-patch PSNR (dB)", "mean-fill PSNR (dB)", "L_rec", "L_IRM", "L_IRM in training"]
    rows = []
    for name, results in mae_runs.items():
        held = [r["target"] for r in results]
        cells = [format_mean_std([h[k] for h in held], 3) for k in ("psnr_masked", "psnr_mean_fill", "loss_rec")]
        cells.append(format_mean_std([h["loss_irm"] for h in held], 3))
        cells.append(format_mean_std([r["loss_irm"] for r in results], 3) if name == "facemae" else "not trained")
        rows.append([VARIANTS[name], *cells])
    return markdown_table(headers, rows)

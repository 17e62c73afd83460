"""``facemae-repro``: does IRM buy recognition accuracy at the same privacy? FaceMAE against its ablation and baselines.

The claim of FaceMAE (arXiv 2205.11090, abstract): a recogniser trained on MAE reconstructions of masked faces of
unseen people verifies far better than one trained on earlier privacy-preserving releases, the IRM term narrows
the gap to real faces, and reconstructed faces are hard to retrieve. Per seed, on synthetic faces (source and
target identities disjoint, verification pairs of further identities):

1. :func:`facemae.engine.fit` of FaceMAE (MAE + IRM, phi trained on the source originals) and of MAE-only
   (lambda_irm = 0), same schedule and seed;
2. the target set released five ways at the same per-image masks: ``original``, ``masked``, ``blur``, ``mae``,
   ``facemae`` (:func:`facemae.engine.reconstruct_dataset`), and the three that mask again at each ratio of the
   sweep (0.25, 0.5, 0.75, 0.9; the MAEs trained at the main ratio);
3. the demo recogniser trained on each release, its 10-fold verification accuracy on the held-out pairs;
4. instance and identity leak@1 of each release against the originals, for an attacker that is the recogniser
   trained on the original target faces (:func:`facemae.engine.privacy_report`);
5. the real-face check: both MAEs and the grey mask on the 100 LFW crops that ship inside scikit-image, PSNR and
   instance leak@1 at each ratio; ``faces.png`` shows originals, masked faces and reconstructions.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from pathlib import Path

import torch

from facemae import __version__
from facemae.config import FRConfig, MAEConfig, build_config
from facemae.data import load_lfw_subset, normalize_faces, open_faces
from facemae.engine import (
    balanced_order,
    evaluate_mae,
    fit,
    load_mae,
    load_recognizer,
    mask_seed,
    privacy_report,
    read_faces,
    read_release,
    reconstruct_dataset,
    release_images,
)
from facemae.metrics import leak_rates
from facemae.models import MaskedAutoencoderViT
from facemae.synthetic import SyntheticSplit, write_synthetic_faces
from shared.errors import UserError
from shared.logging import get_logger
from shared.report import (
    RunCache,
    format_ci95,
    format_mean_std,
    markdown_table,
    mean_std,
    plot_bars,
    plot_lines,
    save_image_grid,
    write_results,
)

VARIANTS = {
    "original": "original faces",
    "masked": "masked faces",
    "blur": "Gaussian blur",
    "mae": "MAE only (λ_IRM = 0)",
    "facemae": "FaceMAE (MAE + λ_IRM IRM)",
}
#: The releases that mask, repeated at every ratio of the sweep.
SWEEP_VARIANTS = ("masked", "mae", "facemae")
SWEEP_RATIOS = (0.25, 0.5, 0.75, 0.9)
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
SWEEP_TITLE = (
    "The releases that mask, across mask ratios (the MAEs trained at the main ratio; one recogniser per release)"
)
LFW_TITLE = (
    "Real faces: the 100 LFW crops of scikit-image (25 px, grey, resized to 32), each with its own mask; the MAEs "
    "trained on synthetic faces; leak@1 by cosine retrieval among the 100 crops, by raw pixels and by the attacker"
)
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
    sweep: Sequence[float] = SWEEP_RATIOS,
) -> dict:
    """Every variant for every seed (reusing runs recorded in ``out/runs``); writes ``results.json``,
    ``results.md``, ``results.png`` (the releases at ``mask_ratio``), ``sweep.png`` (leak and accuracy against
    the mask ratio) and ``faces.png`` (originals, masked faces and reconstructions) into ``out``."""
    if preset not in SCALES:
        raise UserError(f"unknown preset {preset!r}: choose one of {', '.join(SCALES)}")
    lambda_irm = build_config("mae", "demo", lambda_irm=lambda_irm).lambda_irm  # default: the demo preset's
    ratios = sorted({mask_ratio, *sweep})
    if not all(0 < r < 1 for r in ratios) or lambda_irm <= 0:
        raise UserError(f"need mask ratios in (0, 1) and --lambda-irm > 0, got {ratios} and {lambda_irm}")
    log = get_logger()
    started = time.monotonic()
    split = write_synthetic_faces(out / "data" / preset, size=FACE_SIZE, **SCALES[preset]["split"])
    target = open_faces(split.target_folder, FACE_SIZE)
    originals, labels = read_faces(target)
    lfw = load_lfw_subset(FACE_SIZE)
    cache = RunCache(out / "runs", __version__)
    batches = mae_config(preset, split, 1.0, mask_ratio, 0)
    target_order = originals[balanced_order(labels.tolist(), batches)]  # identity-balanced batches for IRM
    trained: list[str] = []
    runs: dict[str, list[dict]] = {release_key(v, r): [] for v, r in releases(ratios, mask_ratio)}
    mae_runs: dict[str, list[dict]] = {"mae": [], "facemae": []}
    lfw_runs: dict[str, list[dict]] = {v: [] for v in SWEEP_VARIANTS}
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
        attacker_run = cache.folder / f"release-original-seed{seed}" / "fr"
        for variant, ratio in releases(ratios, mask_ratio):
            key = release_key(variant, ratio)
            run_name = f"release-{key.replace('@', '-mask')}-seed{seed}"
            fr = fr_config(preset, cache.folder / run_name / "release", split.pairs, seed)
            weights, mae_cfg = maes.get(variant, (None, None))

            def release_and_train(
                variant=variant,
                ratio=ratio,
                run_name=run_name,
                fr=fr,
                weights=weights,
                seed=seed,
                attacker_run=attacker_run,
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
                    mask_ratio=ratio,
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

            spec = {"fr": fr, "mae": mae_cfg, "mask_ratio": ratio, "attacker": attacker_run.parent.name}
            runs[key].append(cache.run(run_name, spec, release_and_train))
        trained_maes = {name: load_mae(path)[0].to(device) for name, (path, _) in maes.items()}
        attacker, phi_model = load_recognizer(attacker_run / "final.pt"), load_recognizer(phi).to(device)
        for name, (_, config) in maes.items():
            # L_rec, L_IRM (through the FaceMAE run's phi) and masked-patch PSNR on the unseen target faces
            held = evaluate_mae(trained_maes[name], phi_model, target_order, config, device)
            mae_runs[name][-1] |= {"target": held}
            lfw_runs[name].append(lfw_check(trained_maes[name], config, attacker, lfw, ratios, seed, device))
        lfw_runs["masked"].append(lfw_check(None, batches, attacker, lfw, ratios, seed, device))
        if seed == 0:
            picture = face_grid(out / "faces.png", trained_maes, originals, lfw, ratios, mask_ratio, device)
        log.info(f"seed {seed} done ({time.monotonic() - started:.0f} s)")
    seconds = round(time.monotonic() - started, 1)
    main = {v: runs[release_key(v, mask_ratio)] for v in VARIANTS}
    table, summary = _table(main)
    accuracy = {v: [r["accuracy"] for r in main[v]] for v in VARIANTS}
    gain = [a - b for a, b in zip(accuracy["facemae"], accuracy["mae"], strict=True)]
    sweep_summary = {key: _summary(values) for key, values in runs.items() if key.split("@")[0] in SWEEP_VARIANTS}
    facemae_leaks = ", ".join(f"{sweep_summary[release_key('facemae', r)]['identity@1']:.3f} at {r:g}" for r in ratios)
    headline = (
        f"verification accuracy FaceMAE {summary['facemae']['accuracy']:.3f}, MAE-only "
        f"{summary['mae']['accuracy']:.3f} (FaceMAE − MAE {format_ci95(gain, 3)}), original "
        f"{summary['original']['accuracy']:.3f}, masked {summary['masked']['accuracy']:.3f}; instance leak@1 "
        f"FaceMAE {summary['facemae']['instance@1']:.3f} vs original {summary['original']['instance@1']:.3f} "
        f"(chance {summary['original']['instance_chance@1']:.4f}); FaceMAE identity leak@1 {facemae_leaks}; "
        f"{seeds} seed(s), mask ratio {mask_ratio}, λ_IRM {lambda_irm:g}."
    )
    scale = SCALES[preset]
    notes = (
        f"{seeds} seed(s), {preset} preset, λ_IRM {lambda_irm:g}: synthetic faces at {FACE_SIZE}px, "
        f"{len(target)} target faces of "
        f"{len(set(labels.tolist()))} identities released, verification on {scale['split']['pairs']} pairs of "
        f"{scale['split']['pair_identities']} further identities (10 folds). MAE {scale['mae_epochs']} epochs at "
        f"mask ratio {mask_ratio} (the sweep releases through these MAEs at the other ratios), phi "
        f"{scale['phi_epochs']}, each recogniser {scale['fr_epochs']}. Mean ± std over seeds. Leak@1: share of "
        "released faces whose nearest original (attacker: the recogniser trained on the original release, cosine) "
        "is their own source (instance) or of their identity (identity); PSNR of each release against its source. "
        f"Wall time {seconds:.0f} s with {torch.get_num_threads()} thread(s)"
        f"{_reuse(trained, len(runs) + 2, seeds, out)}.\n\n![originals, masked faces and reconstructions]"
        f"({picture.name})"
    )
    figure = plot_bars(
        out / "results.png",
        list(VARIANTS),
        {
            "verification accuracy": [accuracy[v] for v in VARIANTS],
            "instance leak@1": [[r["privacy"]["instance@1"] for r in main[v]] for v in VARIANTS],
            "identity leak@1": [[r["privacy"]["identity@1"] for r in main[v]] for v in VARIANTS],
        },
        ylabel="share",
        title=f"Utility and leakage of each release (synthetic faces, mask ratio {mask_ratio}, {seeds} seed(s))",
    )
    sweep_figure = plot_lines(
        out / "sweep.png",
        ratios,
        {
            f"{VARIANTS[v]}: {label}": [[_value(r, metric) for r in runs[release_key(v, ratio)]] for ratio in ratios]
            for metric, label in (("identity@1", "identity leak@1"), ("accuracy", "accuracy"))
            for v in SWEEP_VARIANTS
        },
        xlabel="mask ratio",
        ylabel="share",
        title=f"Leak and verification accuracy against the mask ratio ({seeds} seed(s))",
    )
    tables = [
        table,
        f"{MAE_TABLE_TITLE}:\n\n{_mae_table(mae_runs)}",
        f"{SWEEP_TITLE}:\n\n{_sweep_table(sweep_summary, runs, ratios)}",
        f"{LFW_TITLE}:\n\n{_lfw_table(lfw_runs, ratios)}",
    ]
    if sweep_figure is not None:
        tables[2] += f"\n\n![{SWEEP_TITLE}]({sweep_figure.name})"
    results = {"summary": summary, "sweep": sweep_summary, "runs": runs, "mae_runs": mae_runs, "lfw": lfw_runs}
    results |= {"facemae_minus_mae": gain, "seeds": seeds, "preset": preset, "mask_ratio": mask_ratio}
    results |= {"ratios": ratios, "lambda_irm": lambda_irm, "seconds": seconds}
    results |= {"threads": torch.get_num_threads(), "trained_runs": len(trained)}
    write_results(
        out,
        title="FaceMAE reproduction (synthetic faces, CPU)",
        table="\n\n".join(tables),
        headline=headline,
        notes=notes,
        results=results,
        figure=figure,
    )
    return {**results, "headline": headline}


def releases(ratios: Sequence[float], mask_ratio: float) -> list[tuple[str, float]]:
    """(variant, mask ratio) of every release: all variants at ``mask_ratio``, the masked ones at each ratio."""
    return [(v, mask_ratio) for v in VARIANTS] + [(v, r) for r in ratios if r != mask_ratio for v in SWEEP_VARIANTS]


def release_key(variant: str, ratio: float) -> str:
    """``variant@ratio`` for the releases that mask, the variant alone for those that do not."""
    return f"{variant}@{ratio:g}" if variant in SWEEP_VARIANTS else variant


def lfw_check(
    mae: MaskedAutoencoderViT | None,
    config: MAEConfig,
    attacker: torch.nn.Module,
    faces: torch.Tensor,
    ratios: Sequence[float],
    seed: int,
    device: torch.device,
) -> dict[str, dict]:
    """An MAE trained on synthetic faces (or, ``mae=None``, the grey-masked release) on scikit-image's real LFW
    crops, each with its own seeded mask, at each ratio: PSNR against the original (and, for an MAE, over the
    masked patches beside the mean fill), and instance leak@1 among the 100 crops by raw pixels (cosine) and by
    the attacker's embeddings."""
    seeds = [mask_seed(seed, i, 0) for i in range(len(faces))]
    sources = torch.arange(len(faces))
    report = {}
    for ratio in ratios:
        released = release_images("masked" if mae is None else "mae", faces, seeds, mask_ratio=ratio, mae=mae,
                                  grid=FACE_SIZE // 4, device=device)  # fmt: skip
        by_attacker = privacy_report(attacker, faces, sources, released, sources, device, topk=(1,))
        flat = [normalize_faces(x).flatten(1) for x in (faces, released)]
        by_pixels = leak_rates(flat[0], sources, flat[1], sources, topk=(1,))
        entry = {"psnr": by_attacker["psnr"], "attacker@1": by_attacker["instance@1"]}
        entry |= {"pixels@1": by_pixels["instance@1"], "chance@1": by_pixels["instance_chance@1"]}
        if mae is not None:
            held = evaluate_mae(mae, None, faces, dataclasses.replace(config, mask_ratio=ratio), device, seed)
            entry |= {k: held[k] for k in ("psnr_masked", "psnr_mean_fill")}
        report[f"{ratio:g}"] = entry
    return report


def face_grid(
    path: Path,
    maes: dict[str, MaskedAutoencoderViT],
    synthetic: torch.Tensor,
    lfw: torch.Tensor,
    ratios: Sequence[float],
    mask_ratio: float,
    device: torch.device,
) -> Path:
    """``faces.png``: 8 unseen synthetic target faces and 8 LFW crops, as released by each method (seed 0)."""
    faces = torch.cat([synthetic[:: max(1, len(synthetic) // 8)][:8], lfw[:8]])
    seeds = [mask_seed(0, i, 0) for i in range(len(faces))]
    rows, labels = [faces], ["original"]
    for ratio in ratios:
        rows.append(release_images("masked", faces, seeds, mask_ratio=ratio, grid=FACE_SIZE // 4, device=device))
        labels.append(f"masked {ratio:g}")
        for name in ("mae", "facemae") if ratio == mask_ratio else ("facemae",):
            rows.append(release_images("mae", faces, seeds, mask_ratio=ratio, mae=maes[name], device=device))
            labels.append(f"{'FaceMAE' if name == 'facemae' else 'MAE only'} {ratio:g}")
    return save_image_grid(path, rows, labels, scale=3)


def _reuse(trained: list[str], per_seed: int, seeds: int, out: Path) -> str:
    total = seeds * per_seed
    reused = total - len(trained)
    return f" ({reused} of the {total} runs reused from {out / 'runs'})" if reused else ""


def _value(run: dict, metric: str) -> float:
    return run["accuracy"] if metric == "accuracy" else run["privacy"][metric]


def _summary(runs: list[dict]) -> dict[str, float]:
    """Means over seeds of a release's accuracy, leak@1 and PSNR, and its chance levels."""
    summary = {m: mean_std([_value(r, m) for r in runs])[0] for m in ("accuracy", "instance@1", "identity@1", "psnr")}
    return summary | {k: runs[0]["privacy"][k] for k in ("instance_chance@1", "identity_chance@1")}


def _cells(runs: list[dict]) -> list[str]:
    return [format_mean_std([_value(r, m) for r in runs], 3) for m in ("accuracy", "instance@1", "identity@1")]


def _table(runs: dict[str, list[dict]]) -> tuple[str, dict]:
    headers = ["release", "verification accuracy", "instance leak@1", "identity leak@1", "PSNR (dB)"]
    rows, summary = [], {}
    for variant, label in VARIANTS.items():
        summary[variant] = _summary(runs[variant])
        psnr = (
            "∞ (identical)" if variant == "original" else format_mean_std([_value(r, "psnr") for r in runs[variant]], 2)
        )
        rows.append([label, *_cells(runs[variant]), "∞ (identical)" if variant == "original" else psnr])
    first = summary["original"]
    rows.append(["chance", "0.500", f"{first['instance_chance@1']:.4f}", f"{first['identity_chance@1']:.3f}", ""])
    return markdown_table(headers, rows), summary


def _sweep_table(summary: dict[str, dict], runs: dict[str, list[dict]], ratios: Sequence[float]) -> str:
    headers = ["mask ratio", "release", "verification accuracy", "instance leak@1", "identity leak@1", "PSNR (dB)"]
    rows = []
    for ratio in ratios:
        for variant in SWEEP_VARIANTS:
            key = release_key(variant, ratio)
            psnr = format_mean_std([_value(r, "psnr") for r in runs[key]], 2)
            rows.append([f"{ratio:g}", VARIANTS[variant], *_cells(runs[key]), psnr])
    return markdown_table(headers, rows)


def _lfw_table(lfw_runs: dict[str, list[dict]], ratios: Sequence[float]) -> str:
    headers = ["mask ratio", "release", "PSNR (dB)", "masked-patch PSNR (dB)", "mean-fill PSNR (dB)",
               "instance leak@1, pixels", "instance leak@1, attacker"]  # fmt: skip
    rows = []
    for ratio in ratios:
        for variant in SWEEP_VARIANTS:
            entries = [run[f"{ratio:g}"] for run in lfw_runs[variant]]
            cells = [format_mean_std([e[k] for e in entries], 2) if k in entries[0] else "" for k in
                     ("psnr", "psnr_masked", "psnr_mean_fill")]  # fmt: skip
            cells += [format_mean_std([e[k] for e in entries], 3) for k in ("pixels@1", "attacker@1")]
            rows.append([f"{ratio:g}", VARIANTS[variant], *cells])
    chance = lfw_runs["masked"][0][f"{ratios[0]:g}"]["chance@1"]
    rows.append(["", "chance", "", "", "", f"{chance:.3f}", f"{chance:.3f}"])
    return markdown_table(headers, rows)


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

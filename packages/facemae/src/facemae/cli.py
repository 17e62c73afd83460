"""Console scripts: ``facemae-train``, ``facemae-reconstruct``, ``facemae-privacy``, ``facemae-make-synthetic``,
``facemae-repro``, ``facemae-bench``.

Argument parsing and printing only: the work is :func:`facemae.engine.fit` (which documents the files of a run),
:func:`facemae.engine.reconstruct_dataset`, :func:`facemae.engine.privacy_report`,
:func:`facemae.synthetic.write_synthetic_faces`, :func:`facemae.repro.run` and :mod:`facemae.bench`. Without
``--data`` every command uses the synthetic faces, written once under the user's cache.
``python -m facemae.cli COMMAND`` runs a command; under torchrun:
``torchrun --nproc_per_node=N -m facemae.cli train --stage fr --data ... --preset paper``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import torch

from facemae import bench, repro
from facemae.config import PRESETS, STAGES, build_config
from facemae.engine import (
    RELEASES,
    fit,
    irm_encoder_file,
    load_mae,
    load_recognizer,
    num_identities,
    privacy_report,
    read_faces,
    read_release,
    reconstruct_dataset,
    trained_recognizer,
    training_faces,
)
from facemae.losses import IRM_KINDS, LOSS_ON
from facemae.metrics import GALLERY_MODES
from facemae.models import COMPOSE_MODES, IRESNET_CONFIGS, MAE_CONFIGS, MARGINS
from facemae.synthetic import write_synthetic_faces
from shared import cli, distributed
from shared.checkpoint import save_json
from shared.device import resolve_device
from shared.errors import UserError
from shared.logging import get_logger

_int_list = cli.comma_list(int, "integers")
_float_list = cli.comma_list(float, "numbers")
_path_list = cli.comma_list(Path, "paths")


def _pair(text: str) -> tuple[int, int]:
    values = _int_list(text)
    if len(values) != 2 or min(values) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not IDENTITIES,IMAGES (two positive integers)")
    return values[0], values[1]


def train_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="facemae-train",
        description="FaceMAE training. --stage mae: a masked autoencoder on masked source faces with instance "
        "relation matching (IRM) through a frozen face encoder phi (trained first on the source originals unless "
        "--irm-weights). --stage fr: an IResNet with an ArcFace/CosFace head on a (released) face set, with "
        "10-fold verification on .bin pairs. Without --data: the synthetic faces (source set for mae, target set "
        "for fr). Values left unset come from --preset.",
    )
    parser.add_argument("--stage", choices=STAGES, default="mae", help="what to train")
    parser.add_argument("--data", type=Path, default=None, help="identity folders, or a RecordIO train.rec (+ .idx)")
    parser.add_argument("--face-size", type=int, default=None, help="faces are read at this size (demo 32, else 112)")
    mae = parser.add_argument_group("--stage mae")
    mae.add_argument("--model", choices=sorted(MAE_CONFIGS), default=None, help="MAE size (demo: tiny, small: small)")
    mae.add_argument("--mask-ratio", type=float, default=None, help="share of patches masked (0.75)")
    mae.add_argument(
        "--lambda-irm", type=float, default=None, help="weight of IRM; 0 is plain MAE (paper/small 1.0, demo 0.1)"
    )
    mae.add_argument("--irm", choices=IRM_KINDS, default=None, help="IRM form (kl)")
    mae.add_argument("--tau", type=float, default=None, help="temperature of IRM kl (0.1)")
    mae.add_argument("--compose", choices=COMPOSE_MODES, default=None, help="released image (paste)")
    mae.add_argument("--loss-on", choices=LOSS_ON, default=None, help="patches the reconstruction loss sees (masked)")
    mae.add_argument("--weights", type=Path, default=None, help="MAE checkpoint to start from (official keys)")
    mae.add_argument("--irm-weights", type=Path, default=None, help="trained phi (final.pt of a --stage fr run)")
    mae.add_argument("--blr", type=float, default=None, help="base lr; lr = blr x batch / 256 (1.5e-4, demo 1.6e-2)")
    mae.add_argument(
        "--warmup-epochs", type=int, default=None, help="linear warm-up epochs (paper 40, small 10, demo 1)"
    )
    mae.add_argument("--identities-per-batch", type=int, default=None, help="identities per batch (demo/small 8)")
    mae.add_argument("--images-per-identity", type=int, default=None, help="images of each identity per batch (4)")
    mae.add_argument("--phi-epochs", type=int, default=None, help="epochs of phi when it is trained here (34, 20, 6)")
    mae.add_argument("--phi-val", type=_path_list, default=None, help="verification .bin files for phi")
    fr = parser.add_argument_group("--stage fr")
    fr.add_argument("--network", choices=sorted(IRESNET_CONFIGS), default=None, help="IResNet (paper r50)")
    fr.add_argument("--margin", choices=sorted(MARGINS), default=None, help="margin family (arcface)")
    fr.add_argument("--s", type=float, default=None, help="logit scale (64; demo 32)")
    fr.add_argument("--m", type=float, default=None, help="margin: ArcFace m2 (0.5; demo 0.3), CosFace m3")
    fr.add_argument("--lr", type=float, default=None, help="SGD learning rate (0.1 for a batch of 512)")
    fr.add_argument("--lr-steps", type=_int_list, default=None, help="epochs after which lr x 0.1 (20,28,32)")
    fr.add_argument("--val", type=_path_list, default=None, help="comma-separated verification .bin files")
    fr.add_argument("--eval-every", type=int, default=None, help="epochs between verification passes (1)")
    parser.add_argument("--quiet", action="store_true", help="no per-epoch log lines")
    parser.add_common_args()
    parser.set_presets({name: {} for name in PRESETS}, default="demo")
    return parser


def train_command(argv: Sequence[str] | None = None) -> dict:
    """``facemae-train``: returns the results also written to ``results.json``."""
    args = train_parser().parse_args(argv)
    common = {"data": args.data, "face_size": args.face_size, "epochs": args.epochs, "seed": args.seed}
    common["amp"] = args.amp
    if args.stage == "mae":
        per_identity = args.images_per_identity or 4
        identities = args.identities_per_batch
        if args.batch_size is not None:
            if args.batch_size % per_identity:
                raise UserError(
                    f"--batch-size {args.batch_size} is not a multiple of {per_identity} images per identity"
                )
            identities = args.batch_size // per_identity
        options = {
            "model": args.model,
            "mask_ratio": args.mask_ratio,
            "lambda_irm": args.lambda_irm,
            "irm": args.irm,
            "tau": args.tau,
            "compose": args.compose,
            "loss_on": args.loss_on,
            "weights": args.weights,
            "irm_weights": args.irm_weights,
            "blr": args.blr,
            "warmup_epochs": args.warmup_epochs,
            "identities_per_batch": identities,
            "images_per_identity": args.images_per_identity,
            "phi_epochs": args.phi_epochs,
            "phi_val": args.phi_val,
        }
    else:
        options = {
            "network": args.network,
            "margin": args.margin,
            "s": args.s,
            "m": args.m,
            "lr": args.lr,
            "lr_steps": args.lr_steps,
            "val": args.val,
            "eval_every": args.eval_every,
            "batch_size": args.batch_size,
        }
    config = build_config(args.stage, args.preset, **common, **options)
    device = resolve_device(args.device)
    distributed.init_distributed(device)
    with cli.run_folder(args.out, "facemae", args.resume) as out:
        results = fit(config, out, device, resume=args.resume, workers=args.workers, quiet=args.quiet)
    summary = (
        f"masked-patch PSNR {results['psnr_masked']:.2f} dB (mean fill {results['psnr_mean_fill']:.2f} dB)"
        if args.stage == "mae"
        else ", ".join(f"{name} accuracy {v['accuracy']:.4f}" for name, v in results["verification"].items())
    )
    if distributed.is_main_process():
        get_logger().info(f"{summary}; weights: {out / 'final.pt'}")
    return results


def reconstruct_command(argv: Sequence[str] | None = None) -> dict:
    """``facemae-reconstruct``: a released face set and its private manifest."""
    parser = cli.ArgumentParser(
        prog="facemae-reconstruct",
        description="Release a face set: every face masked with its own seeded mask and reconstructed by a trained "
        "FaceMAE (--method mae), or a baseline (original, masked, blur, pixelate, noise), written as identity "
        "folders or a RecordIO pack with the identity labels. The manifest (source index, mask seed of each "
        "released face) is written apart from the release: keep it private, facemae-privacy needs it.",
    )
    parser.add_argument("--method", choices=RELEASES, default="mae", help="how faces are released")
    parser.add_argument("--weights", type=Path, default=None, help="final.pt of a --stage mae run (--method mae)")
    parser.add_argument("--data", type=Path, default=None, help="faces to release (default: the synthetic target set)")
    parser.add_argument("--out", type=Path, required=True, help="release folder (new or empty)")
    parser.add_argument("--manifest", type=Path, default=None, help="private manifest (default: <out>.manifest.json)")
    parser.add_argument("--format", choices=("folder", "rec"), default="folder", help="identity folders or RecordIO")
    parser.add_argument("--mask-ratio", type=float, default=0.75, help="share of patches masked")
    parser.add_argument("--views", type=int, default=1, help="released versions of each face, each its own mask")
    parser.add_argument("--compose", choices=COMPOSE_MODES, default=None, help="default: the MAE run's")
    parser.add_argument("--grid", type=int, default=8, help="patches per side of --method masked (demo MAE: 8)")
    parser.add_argument(
        "--face-size", type=int, default=None, help="faces are read at this size (default: the MAE's, else 32)"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the per-image masks")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    mae, config = (None, {})
    if args.method == "mae":
        if args.weights is None:
            raise UserError("--method mae needs --weights FINAL.pt of a facemae-train --stage mae run")
        mae, config = load_mae(args.weights)
    face_size = args.face_size or config.get("face_size", 32)
    grid = mae.patch_embed.grid_size if mae is not None else args.grid
    faces = training_faces(args.data, face_size, "target")
    manifest = args.manifest or args.out.with_name(f"{args.out.name}.manifest.json")
    path = reconstruct_dataset(
        args.method,
        faces,
        args.out,
        manifest,
        mae=mae,
        fmt=args.format,
        mask_ratio=args.mask_ratio,
        views=args.views,
        seed=args.seed,
        compose=args.compose or config.get("compose", "paste"),
        grid=grid,
        device=device,
        source=str(args.data or "synthetic target set"),
        weights=str(args.weights) if mae is not None else "",
    )
    print(
        f"released {len(faces) * args.views} faces of {num_identities(faces)} identities into {args.out}; "
        f"private manifest: {path}"
    )
    return {"release": str(args.out), "manifest": str(path)}


def privacy_command(argv: Sequence[str] | None = None) -> dict:
    """``facemae-privacy``: leak rates of a release."""
    parser = cli.ArgumentParser(
        prog="facemae-privacy",
        description="How much a release leaks: each released face retrieves among the originals by an attacker's "
        "face embeddings (cosine); instance leak@k = its own source is in the top k, identity leak@k = a face of "
        "its identity is; with chance levels, mean cosine, PSNR and SSIM against the sources. The attacker is "
        "--attacker-weights (a --stage fr final.pt or an arcface_torch state_dict), or --attacker irm (the face "
        "encoder phi of the MAE run that made the release), or, by default, a recogniser trained here on the "
        "originals (the strongest realistic one).",
    )
    parser.add_argument("--manifest", type=Path, required=True, help="the release's private manifest")
    parser.add_argument("--released", type=Path, default=None, help="release folder (default: the manifest's)")
    parser.add_argument(
        "--originals", type=Path, default=None, help="the released set's originals (default: synthetic)"
    )
    parser.add_argument(
        "--attacker",
        choices=("train", "irm"),
        default="train",
        help="train: a recogniser trained here on the originals; irm: the MAE run's IRM encoder phi",
    )
    parser.add_argument("--attacker-weights", type=Path, default=None, help="attacker encoder (overrides --attacker)")
    parser.add_argument("--network", choices=sorted(IRESNET_CONFIGS), default="iresnet50", help="of a raw state_dict")
    parser.add_argument("--topk", type=_int_list, default=[1, 5], help="comma-separated k of leak@k")
    parser.add_argument("--gallery", choices=GALLERY_MODES, default="all", help="exclude-source: identity leaks "
                        "must come from another photo")  # fmt: skip
    parser.add_argument("--preset", choices=PRESETS, default="demo", help="recipe of the attacker trained here")
    parser.add_argument("--out", type=Path, required=True, help="folder for privacy.json (and the attacker run)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the attacker trained here")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    args = parser.parse_args(argv)
    device = resolve_device(args.device)
    record, released = read_release(args.manifest, args.released)
    size = released.shape[-1]
    originals_faces = training_faces(args.originals, size, "target")
    if len(originals_faces) != record["source_count"]:
        where = args.originals or "the synthetic target set"
        raise UserError(
            f"the manifest describes {record['source_count']} originals, {where} holds {len(originals_faces)}: "
            "pass --originals, the set that was released"
        )
    if args.attacker_weights is not None:
        attacker = load_recognizer(args.attacker_weights, args.network, size)
    elif args.attacker == "irm":
        if not record.get("weights"):
            raise UserError(f"{args.manifest} is a {record['method']} release, not an MAE's: --attacker irm needs one")
        attacker = load_recognizer(irm_encoder_file(record["weights"]), args.network, size)
    else:
        config = build_config("fr", args.preset, data=args.originals, face_size=size, seed=args.seed)
        attacker = trained_recognizer(config, args.out / "attacker", device)
    originals, labels = read_faces(originals_faces)
    sources = torch.tensor([item["source"] for item in record["items"]])
    report = privacy_report(
        attacker, originals, labels, released, sources, device, topk=args.topk, gallery=args.gallery
    )
    report |= {"method": record["method"], "mask_ratio": record["mask_ratio"]}
    report["attacker"] = str(args.attacker_weights) if args.attacker_weights is not None else args.attacker
    save_json(args.out / "privacy.json", report)
    print(json.dumps(report, indent=2))
    return report


def make_synthetic_command(argv: Sequence[str] | None = None) -> dict:
    """``facemae-make-synthetic``: write the synthetic faces in the real formats."""
    parser = cli.ArgumentParser(
        prog="facemae-make-synthetic",
        description="Write procedural identity-labelled faces (identity = fixed face, hair, eye, nose and mouth "
        "parameters; nuisance = pose, expression, lighting, noise): a source set and a disjoint target set as "
        "identity folders and RecordIO packs, and verification pairs of further identities as a .bin file.",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder to write (reused if made with these options)")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels")
    parser.add_argument("--seed", type=int, default=0, help="seed of identities and images")
    parser.add_argument("--source", type=_pair, default=(100, 20), help="source IDENTITIES,IMAGES")
    parser.add_argument("--target", type=_pair, default=(60, 20), help="target IDENTITIES,IMAGES")
    parser.add_argument("--pair-identities", type=int, default=40, help="identities of the verification pairs")
    parser.add_argument("--pairs", type=int, default=1200, help="verification pairs (a multiple of 20)")
    args = parser.parse_args(argv)
    if args.pairs < 20 or args.pairs % 20 or args.pair_identities < 2 or args.size < 16:
        raise UserError("need --pairs a positive multiple of 20, --pair-identities >= 2 and --size >= 16")
    split = write_synthetic_faces(
        args.out, args.size, args.seed, args.source, args.target, args.pair_identities, args.pairs
    )
    paths = {
        name: str(getattr(split, name))
        for name in ("source_folder", "source_rec", "target_folder", "target_rec", "pairs")
    }
    print(json.dumps(paths, indent=2))
    return paths


def repro_command(argv: Sequence[str] | None = None) -> dict:
    """``facemae-repro``: FaceMAE against MAE-only and the baseline releases; prints ``results.md``."""
    parser = cli.repro_parser(
        "facemae-repro",
        "Does IRM buy recognition accuracy at the same privacy? On synthetic faces at mask ratio 0.75: train "
        "FaceMAE (MAE + lambda_IRM x IRM) and MAE-only (lambda 0) on the source identities, release the unseen "
        "target identities (original, masked, blur, mae, facemae), train a recogniser on each release, and report "
        "verification accuracy on held-out pairs and instance/identity leak@1 against an attacker trained on the "
        "originals.",
        repro.PRESET_HELP,
    )
    parser.add_argument("--mask-ratio", type=float, default=0.75, help="share of patches masked (MAE training)")
    parser.add_argument("--lambda-irm", type=float, default=None, help="IRM weight of the FaceMAE run (demo: 0.1)")
    parser.add_argument(
        "--sweep",
        type=_float_list,
        default=repro.SWEEP_RATIOS,
        help="further mask ratios of the masked, MAE and FaceMAE releases (comma-separated; '' for none)",
    )
    return cli.run_repro(parser, argv, "facemae", repro.run, "mask_ratio", "lambda_irm", "sweep")


def bench_command(argv: Sequence[str] | None = None) -> dict:
    """``facemae-bench``: images/s of FaceMAE training and of reconstruction across mask ratios."""
    parser = cli.ArgumentParser(
        prog="facemae-bench",
        description="Images/s of one FaceMAE training step (MAE + IRM through a frozen IResNet, AdamW) and of "
        "reconstruction at mask ratios 0.25-0.9, on random faces. The MAE encoder sees only the visible patches, "
        "so reconstruction gets cheaper as the ratio rises. Defaults: the paper sizes (ViT-B/16 at 224, "
        "IResNet-50 at 112); --model mae_vit_tiny_patch4 --network iresnet_mini --face-size 32 is the demo.",
    )
    parser.add_argument("--model", choices=sorted(MAE_CONFIGS), default="mae_vit_base_patch16", help="MAE")
    parser.add_argument("--network", choices=sorted(IRESNET_CONFIGS), default="iresnet50", help="phi")
    parser.add_argument("--face-size", type=int, default=112, help="face side in pixels")
    parser.add_argument("--batch-size", type=int, default=128, help="images per step (a multiple of 4)")
    parser.add_argument("--steps", type=int, default=10, help="timed calls per measurement (median)")
    parser.add_argument("--ratios", type=_float_list, default=bench.RATIOS, help="comma-separated mask ratios")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--amp", action="store_true", help="mixed precision")
    args = parser.parse_args(argv)
    cli.set_threads(args.threads)
    result = bench.benchmark(
        resolve_device(args.device),
        model=args.model,
        network=args.network,
        face_size=args.face_size,
        batch_size=args.batch_size,
        steps=args.steps,
        ratios=args.ratios,
        amp=args.amp,
    )
    print(bench.format_result(result))
    return result


COMMANDS = {
    "train": train_command,
    "reconstruct": reconstruct_command,
    "privacy": privacy_command,
    "make-synthetic": make_synthetic_command,
    "repro": repro_command,
    "bench": bench_command,
}
train_main = cli.console_script(train_command)
reconstruct_main = cli.console_script(reconstruct_command)
privacy_main = cli.console_script(privacy_command)
make_synthetic_main = cli.console_script(make_synthetic_command)
repro_main = cli.console_script(repro_command)
bench_main = cli.console_script(bench_command)

if __name__ == "__main__":
    sys.exit(cli.run_command(COMMANDS))

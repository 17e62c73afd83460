"""Console scripts: ``tbvs-train``, ``tbvs-eval``, ``tbvs-flow``, ``tbvs-make-synthetic``, ``tbvs-prepare``,
``tbvs-repro``, ``tbvs-bench``.

Argument parsing and printing only: the work is :func:`tbvs.engine.fit` (which documents the files of a run),
:func:`tbvs.engine.evaluate_file`, :func:`tbvs.flow.write_flow_folders`, :func:`tbvs.synthetic.make_synthetic`,
:func:`tbvs.data.prepare_a2d` / :func:`tbvs.data.prepare_jhmdb`, :func:`tbvs.repro.run` and :mod:`tbvs.bench`.
Without ``--data`` training runs on the synthetic set, generated and prepared once into the cache. Under torchrun:
``torchrun --nproc_per_node=N -m tbvs.cli train --preset paper --data PREPARED --text-model BERT_DIR``.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from shared import cli, distributed
from shared.checkpoint import save_json
from shared.device import resolve_device
from shared.logging import get_logger
from tbvs import bench, repro
from tbvs.config import BINARIZE, PRESET_HELP, PRESETS, TEXT_ENCODERS, build_config
from tbvs.data import PREPARE_FLOWS, prepare_a2d, prepare_jhmdb
from tbvs.engine import evaluate_file, fit
from tbvs.flow import FLOW_METHODS, WEIGHTED_FLOW_METHODS, flow_estimator, write_flow_folders
from tbvs.models import ARCHS, VARIANTS
from tbvs.synthetic import make_synthetic


def train_parser() -> cli.ArgumentParser:
    parser = cli.ArgumentParser(
        prog="tbvs-train",
        description="Train the text-based video segmentation model of Zhao et al. (CVPR 2022): RGB and optical-flow "
        "backbones, the multi-modal video transformer, language-guided feature fusion and the multi-modal "
        "alignment loss. Without --data/--raw: the synthetic set where only motion tells look-alike objects "
        "apart (generated, prepared with Farneback flow and cached once). Presets: "
        + "; ".join(f"{k}: {v}" for k, v in PRESET_HELP.items()),
    )
    data = parser.add_argument_group("data")
    data.add_argument("--data", type=Path, default=None, help="prepared TBVS folder (holding A2D/ or J-HMDB/)")
    data.add_argument("--raw", type=Path, default=None, help="raw A2D Sentences folder, prepared once beside itself")
    data.add_argument("--dataset", choices=("a2d", "jhmdb"), default=None, help="layout of --data (a2d)")
    data.add_argument(
        "--flow", choices=PREPARE_FLOWS, default=None, help="flow of the synthetic set or --raw (farneback)"
    )
    model = parser.add_argument_group("model")
    model.add_argument("--variant", default=None, help=f"ablation ladder: {', '.join(VARIANTS)} (B+M+T+L+A)")
    model.add_argument("--arch", choices=sorted(ARCHS), default=None, help="network size")
    model.add_argument("--text-encoder", choices=TEXT_ENCODERS, default=None, help="text encoder")
    model.add_argument("--text-model", type=Path, default=None, help="local BERT directory (hf-bert)")
    model.add_argument("--rgb-weights", type=Path, default=None, help="local ImageNet resnet101 .pth")
    model.add_argument("--flow-weights", type=Path, default=None, help="local ImageNet resnet34 .pth")
    model.add_argument("--input-size", type=int, default=None, help="square network input side")
    model.add_argument("--vf-pixels", type=int, default=None, help="subsample the vision-flow affinity to K pixels")
    model.add_argument(
        "--paper-quirks-off",
        action="store_true",
        help="mask padding with -inf and source the LGFF flow attention from flow (the release does neither)",
    )
    optim = parser.add_argument_group("optimisation (Adam, multi-step lr by iteration)")
    optim.add_argument("--iterations", type=int, default=None, help="training iterations")
    optim.add_argument("--lr", type=float, default=None, help="Adam learning rate")
    optim.add_argument("--eval-every", type=int, default=None, help="iterations between evaluations (0: at the end)")
    optim.add_argument("--binarize", choices=BINARIZE, default=None, help="mask binarisation (relative)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--quiet", action="store_true", help="no log lines")
    parser.add_common_args(epochs=False)
    parser.set_presets({name: {} for name in PRESETS}, default="demo")
    return parser


def train_command(argv: Sequence[str] | None = None) -> dict:
    """``tbvs-train``: returns the results also written to ``results.json``."""
    args = train_parser().parse_args(argv)
    cli.set_threads(args.threads)
    quirks = {"faithful_mask": False, "flow_attn_source": "flow"} if args.paper_quirks_off else {}
    config = build_config(
        args.preset,
        data=args.data,
        raw=args.raw,
        dataset=args.dataset,
        flow=args.flow,
        variant=args.variant,
        arch=args.arch,
        text_encoder=args.text_encoder,
        text_model=args.text_model,
        rgb_weights=args.rgb_weights,
        flow_weights=args.flow_weights,
        input_size=args.input_size,
        vf_pixels=args.vf_pixels,
        iterations=args.iterations,
        lr=args.lr,
        eval_every=args.eval_every,
        binarize=args.binarize,
        batch_size=args.batch_size,
        workers=args.workers,
        seed=args.seed,
        amp=args.amp or None,
        **quirks,
    )
    device = resolve_device(args.device)
    distributed.init_distributed(device)
    with cli.run_folder(args.out, "tbvs", args.resume) as out:
        results = fit(config, out, device, resume=args.resume, quiet=args.quiet, info={"preset": args.preset})
    if distributed.is_main_process() and not args.quiet:
        line = ", ".join(f"{g} {m['mean_iou']:.3f}" for g, m in results["metrics"].items())
        get_logger().info(f"test mean IoU: {line}; weights: {out / 'final.pt'}")
    return results


def eval_command(argv: Sequence[str] | None = None) -> dict:
    """``tbvs-eval``: the 8 benchmark numbers of a trained model, printed as JSON."""
    parser = cli.ArgumentParser(
        prog="tbvs-eval",
        description="Evaluate a trained model: Precision@0.5..0.9, the A2D mean-precision mAP (not COCO's), "
        "overall and mean IoU, per synthetic subset where the data have them. --shuffle-flow feeds each clip "
        "the flow of another video (the control showing the model uses motion).",
    )
    parser.add_argument("--weights", type=Path, required=True, help="final.pt (or checkpoint-<iteration>.pt)")
    parser.add_argument("--data", type=Path, default=None, help="prepared folder (default: the run's synthetic set)")
    parser.add_argument("--dataset", choices=("a2d", "jhmdb"), default="a2d", help="layout of --data")
    parser.add_argument("--split", choices=("train", "test"), default="test", help="split to evaluate")
    parser.add_argument("--binarize", choices=BINARIZE, default=None, help="default: the run's (relative)")
    parser.add_argument("--shuffle-flow", action="store_true", help="flow from another video of the split")
    parser.add_argument("--batch-size", type=int, default=None, help="clips per forward pass")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    cli.set_threads(args.threads)
    results = evaluate_file(
        args.weights,
        args.data,
        resolve_device(args.device),
        split=args.split,
        dataset=args.dataset,
        shuffle_flow=args.shuffle_flow,
        binarize=args.binarize,
        batch_size=args.batch_size,
    )
    print(json.dumps(results, indent=2))
    return results


def flow_command(argv: Sequence[str] | None = None) -> dict:
    """``tbvs-flow``: optical flow t→t+1 of video frame folders, saved as colour-wheel PNGs."""
    parser = cli.ArgumentParser(
        prog="tbvs-flow",
        description="Optical flow t→t+1 of one folder of video frames or a tree of them, rendered as colour-wheel "
        "images (the motion input of TBVS, RAFT's flow_viz in the release) with the frames' names; the last "
        "frame reuses the flow (F-1 → F).",
    )
    parser.add_argument("--frames", type=Path, required=True, help="a video folder of frames, or a tree of them")
    parser.add_argument("--out", type=Path, required=True, help="output folder (same relative layout)")
    parser.add_argument(
        "--method", choices=sorted([*FLOW_METHODS, *WEIGHTED_FLOW_METHODS]), default="farneback", help="flow estimator"
    )
    _raft_args(parser)
    args = parser.parse_args(argv)

    def progress(done: int, total: int, folder: Path) -> None:
        print(f"[{done}/{total}] {folder}", file=sys.stderr, flush=True)

    method = flow_estimator(args.method, weights=args.raft_weights, size=args.raft_size, device=args.device)
    result = write_flow_folders(args.frames, args.out, method, progress)
    print(f"wrote the flow of {result['videos']} video(s), {result['images']} image(s), to {args.out}")
    return result


def _raft_args(parser: cli.ArgumentParser) -> None:
    group = parser.add_argument_group("RAFT (the release's flow; weights from a local file, torchvision's layout)")
    group.add_argument("--raft-weights", type=Path, default=None, help="e.g. raft_large_C_T_SKHT_V2-ff5fadd5.pth")
    group.add_argument("--raft-size", choices=("large", "small"), default="large", help="torchvision RAFT model")
    group.add_argument("--device", default="cpu", help="device of RAFT (cpu, cuda, cuda:N)")


def make_synthetic_command(argv: Sequence[str] | None = None) -> dict:
    """``tbvs-make-synthetic``: write the synthetic text-video segmentation set in a raw dataset format."""
    parser = cli.ArgumentParser(
        prog="tbvs-make-synthetic",
        description="Write the synthetic set (textured shapes moving over a static background; half the videos hold "
        "three look-alikes that only their motion tells apart) in the raw A2D Sentences or J-HMDB format.",
    )
    parser.add_argument("--out", type=Path, required=True, help="new (or empty) output folder")
    parser.add_argument("--format", choices=("a2d", "jhmdb"), default="a2d", help="raw format written")
    parser.add_argument("--train-videos", type=int, default=160, help="training videos (A2D format)")
    parser.add_argument("--test-videos", type=int, default=40, help="test videos")
    parser.add_argument("--size", type=int, default=96, help="frame side in pixels")
    parser.add_argument("--frames", type=int, default=9, help="frames per video")
    parser.add_argument("--seed", type=int, default=0, help="generator seed")
    parser.add_argument("--oracle-flow", action="store_true", help="also write the exact flow (oracle_flow/)")
    parser.add_argument("--mp4", action="store_true", help="also write Release/clips320H/<vid>.mp4 (A2D)")
    args = parser.parse_args(argv)
    meta = make_synthetic(
        args.out,
        fmt=args.format,
        train_videos=args.train_videos,
        test_videos=args.test_videos,
        size=args.size,
        frames=args.frames,
        seed=args.seed,
        oracle_flow=args.oracle_flow,
        mp4=args.mp4,
    )
    print(
        f"wrote {meta['train_videos']} train / {meta['test_videos']} test videos ({args.format}), samples "
        f"{meta['samples']}, to {args.out}"
    )
    return {k: v for k, v in meta.items() if k != "videos"}


def prepare_command(argv: Sequence[str] | None = None) -> dict:
    """``tbvs-prepare a2d|jhmdb``: raw A2D / J-HMDB Sentences to the TBVS prepared layout."""
    parser = cli.ArgumentParser(
        prog="tbvs-prepare",
        description="Write the layout the TBVS loaders read (all frames, flow images, palette masks, list files) "
        "from raw A2D Sentences or J-HMDB Sentences.",
    )
    parser.add_argument("dataset", choices=("a2d", "jhmdb"), help="raw dataset kind")
    parser.add_argument("--raw", type=Path, required=True, help="raw dataset folder")
    parser.add_argument("--dest", type=Path, required=True, help="prepared folder (A2D/ or J-HMDB/ is made in it)")
    parser.add_argument(
        "--flow", choices=[*PREPARE_FLOWS, *WEIGHTED_FLOW_METHODS], default="farneback", help="flow estimator"
    )
    parser.add_argument(
        "--frames-from", choices=("auto", "png", "mp4"), default="auto", help="A2D frames: PNGs or the mp4s"
    )
    _raft_args(parser)
    args = parser.parse_args(argv)
    flow = args.flow
    if flow in WEIGHTED_FLOW_METHODS or args.raft_weights is not None:
        flow = flow_estimator(flow, weights=args.raft_weights, size=args.raft_size, device=args.device)
    if args.dataset == "a2d":
        result = prepare_a2d(args.raw, args.dest, flow=flow, frames_from=args.frames_from)
    else:
        result = prepare_jhmdb(args.raw, args.dest, flow=flow)
    print(f"prepared {args.dataset} into {args.dest}: {json.dumps(result)}")
    return result


def repro_command(argv: Sequence[str] | None = None) -> dict:
    """``tbvs-repro``: the full model against no motion, shuffled flow and no alignment; prints ``results.md``."""
    parser = cli.repro_parser(
        "tbvs-repro",
        "Does motion buy the objects only motion tells apart? On the synthetic set (half the videos hold three "
        "look-alikes with different motions): train the full model (B+M+T+L+A), the no-motion control (B+T+L+A) and "
        "the model without the alignment loss (B+M+T+L) per seed, evaluate the full model with shuffled flow too, "
        "and report the 8 benchmark numbers on all / ambiguous / appearance samples with paired differences.",
        repro.PRESET_HELP,
    )
    parser.add_argument("--iterations", type=int, default=None, help="training iterations per run (preset's)")
    return cli.run_repro(parser, argv, "tbvs", repro.run, "iterations")


def bench_command(argv: Sequence[str] | None = None) -> dict:
    """``tbvs-bench``: flow frames/s, paper-size training/inference clips/s with module shares, demo it/s."""
    parser = cli.ArgumentParser(
        prog="tbvs-bench",
        description="Frames/s of Farneback and Horn-Schunck flow at 320x320; clips/s of a training step and of "
        "inference of the paper-size model (dilated ResNet-101 + ResNet-34 os16 + a randomly initialised "
        "BERT-base built locally, nothing downloads; the tiny text encoder without transformers) at 320x320, "
        "clip 3, with each module's share of the forward time; and the demo network's training it/s.",
    )
    parser.add_argument("--size", type=int, default=320, help="input side of the paper-size model and the flow")
    parser.add_argument("--batch-size", type=int, default=1, help="clips per paper-size step")
    parser.add_argument("--steps", type=int, default=3, help="timed paper-size steps (median)")
    parser.add_argument("--demo-steps", type=int, default=20, help="timed demo-network training steps")
    parser.add_argument("--text", choices=("bert", "tiny"), default="bert", help="paper-size text encoder")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--amp", action="store_true", help="mixed precision (CUDA)")
    parser.add_argument("--out", type=Path, default=None, help="also write the report as JSON here")
    args = parser.parse_args(argv)
    cli.set_threads(args.threads)
    result = bench.benchmark(
        resolve_device(args.device),
        size=args.size,
        batch_size=args.batch_size,
        steps=args.steps,
        demo_steps=args.demo_steps,
        text=args.text,
        amp=args.amp,
    )
    print(bench.format_result(result))
    if args.out is not None:
        save_json(args.out, result)
    return result


COMMANDS = {
    "train": train_command,
    "eval": eval_command,
    "flow": flow_command,
    "make-synthetic": make_synthetic_command,
    "prepare": prepare_command,
    "repro": repro_command,
    "bench": bench_command,
}
train_main = cli.console_script(train_command)
eval_main = cli.console_script(eval_command)
flow_main = cli.console_script(flow_command)
make_synthetic_main = cli.console_script(make_synthetic_command)
prepare_main = cli.console_script(prepare_command)
repro_main = cli.console_script(repro_command)
bench_main = cli.console_script(bench_command)

if __name__ == "__main__":
    sys.exit(cli.run_command(COMMANDS))

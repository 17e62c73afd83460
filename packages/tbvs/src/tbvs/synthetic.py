"""A procedural text–video segmentation set where motion is needed, written in the raw A2D / J-HMDB formats.

Each video shows 2–3 textured shapes translating at constant speed over a static low-frequency background.
Half the videos are *ambiguous*: three identical shapes with pairwise different motions, each described by
a sentence that only its motion resolves ("the red circle moving left"). The other half are *appearance*
videos: shapes of distinct (colour, shape), described by colour and shape and optionally motion. Positions
at the middle frame are drawn from the same box for every motion, so position alone never reveals motion.

The files follow A2D Sentences (Gavrilyuk et al., CVPR 2018) as released: ``Release/videoset.csv``,
``text_annotations/a2d_annotation.txt``, ``a2d_missed_videos.txt`` and per-frame ``.h5`` instance masks
stored transposed; frames go to ``Release/frames/<vid>/<frame:05d>.png`` (1-based) instead of an mp4.
``fmt='jhmdb'`` writes J-HMDB Sentences (Rename_Images, ``puppet_mask.mat``, ``jhmdb_annotation.txt``).
Exact flow t→t+1 goes to ``oracle_flow/<vid>/<frame:05d>.npy`` and the subset of every query to
``synthetic_subsets.csv``.
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.io
from PIL import Image

from shared.errors import UserError

GENERATOR_VERSION = 1
COLOURS = {"red": (220, 40, 40), "green": (40, 180, 60), "blue": (50, 80, 220), "yellow": (230, 210, 40)}
SHAPES = ("circle", "square", "triangle")
MOTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1), "still": (0, 0)}
SPEED = 3  # pixels per frame
RADII = (6, 7, 8)
NOISE = 12  # ± grey levels of each object's rigid texture
VOCABULARY = ("the", "a", *COLOURS, *SHAPES, "moving", "going", *MOTIONS, "that", "is", "not", "standing")
SUBSETS_FILE = "synthetic_subsets.csv"
SUBSET_KINDS = ("ambiguous", "appearance")


def annotated_frames(frames: int) -> list[int]:
    """The three annotated 1-based frames around the middle frame t0 = (F + 1) // 2."""
    t0 = (frames + 1) // 2
    return [t0 - 1, t0, t0 + 1]


def _shape_mask(shape: str, r: int) -> np.ndarray:
    """(2r+1, 2r+1) bool mask centred on the middle pixel; the triangle is equilateral with circumradius r."""
    y, x = np.mgrid[-r : r + 1, -r : r + 1].astype(np.float64)
    if shape == "circle":
        return x * x + y * y <= r * r + 0.5
    if shape == "square":
        return np.ones_like(x, dtype=bool)
    return (y <= r / 2) & (np.sqrt(3) * np.abs(x) <= y + r)


def _extent(shape: str, r: int) -> float:
    """Radius of the circle enclosing the shape (used for the no-occlusion test)."""
    return r * np.sqrt(2) if shape == "square" else float(r)


def _background(rng: np.random.Generator, size: int) -> np.ndarray:
    """Static grey texture: 3–4 random low-frequency 2-D sinusoids, ±20 levels around a random mid-grey."""
    y, x = np.mgrid[0:size, 0:size] / size
    n = int(rng.integers(3, 5))
    freq = rng.uniform(0.5, 2.5, size=(n, 2)) * rng.choice([-1, 1], size=(n, 2))
    phase = rng.uniform(0, 2 * np.pi, size=n)
    waves = np.sin(2 * np.pi * (freq[:, 0, None, None] * x + freq[:, 1, None, None] * y) + phase[:, None, None])
    texture = waves.sum(0) / n * 20
    return rng.uniform(100, 160) + texture


def _sentence(rng: np.random.Generator, obj: dict[str, Any], need_motion: bool) -> str:
    name = f"the {obj['colour']} {obj['shape']}"
    if obj["motion"] == "still":
        options = [f"{name} that is still"] + ([] if need_motion else [name])
    else:
        options = [f"{name} moving {obj['motion']}", f"{name} going {obj['motion']}"] + ([] if need_motion else [name])
    return str(options[int(rng.integers(len(options)))])


def _place(rng: np.random.Generator, objects: list[dict[str, Any]], size: int, frames: int) -> None:
    """Draw positions at t0 uniformly in one box for all motions; redraw until no two objects ever touch."""
    t0 = (frames + 1) // 2
    d = SPEED * max(t0 - 1, frames - t0)
    t = np.arange(1, frames + 1) - t0
    velocity = np.array([MOTIONS[o["motion"]] for o in objects]) * SPEED
    radius = np.array([o["radius"] for o in objects])
    extent = np.array([_extent(o["shape"], o["radius"]) for o in objects])
    low, high = radius + d, size - 1 - radius - d  # every pixel of the shape stays on the canvas
    if np.any(low > high):
        raise UserError(f"canvas {size} px is too small for {frames} frames at {SPEED} px/frame: use --size >= 64")
    gap = extent[:, None] + extent[None, :] + 2
    off_diagonal = ~np.eye(len(objects), dtype=bool)
    for _ in range(1000):
        p0 = rng.integers(low[:, None], high[:, None] + 1, size=(len(objects), 2))
        path = p0[:, None, :] + velocity[:, None, :] * t[None, :, None]  # (n, F, 2) as (x, y)
        dist = np.sqrt(((path[:, None] - path[None, :]) ** 2).sum(-1)).min(-1)
        if np.all(dist[off_diagonal] >= gap[off_diagonal]):
            for obj, p in zip(objects, p0, strict=True):
                obj["position_t0"] = [int(p[0]), int(p[1])]
            return
    raise UserError(f"cannot place {len(objects)} objects without contact on a {size} px canvas: use a larger --size")


def _sample_objects(rng: np.random.Generator, kind: str) -> list[dict[str, Any]]:
    if kind == "ambiguous":
        colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
        radius = int(rng.choice(RADII))
        motions = rng.choice(list(MOTIONS), size=3, replace=False)
        specs = [(colour, shape, radius, m) for m in motions]
    else:
        pairs = [(c, s) for c in COLOURS for s in SHAPES]
        chosen = rng.choice(len(pairs), size=int(rng.integers(2, 4)), replace=False)
        specs = [(*pairs[i], int(rng.choice(RADII)), rng.choice(list(MOTIONS))) for i in chosen]
    return [
        {"instance_id": i, "colour": str(c), "shape": str(s), "radius": r, "motion": str(m)}
        for i, (c, s, r, m) in enumerate(specs)
    ]


def _render(
    rng: np.random.Generator, objects: list[dict[str, Any]], size: int, frames: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Frames (F, S, S, 3) uint8, label maps (F, S, S) with instance_id + 1, exact flow t→t+1 (F−1, 2, S, S)."""
    t0 = (frames + 1) // 2
    grey = _background(rng, size)
    video = np.repeat(np.repeat(grey[None, :, :, None], 3, axis=3), frames, axis=0)
    labels = np.zeros((frames, size, size), dtype=np.uint8)
    flow = np.zeros((max(frames - 1, 0), 2, size, size), dtype=np.float32)
    for obj in objects:
        r = obj["radius"]
        mask = _shape_mask(obj["shape"], r)
        texture = (
            np.asarray(COLOURS[obj["colour"]], dtype=np.float64)
            + rng.integers(-NOISE, NOISE + 1, mask.shape)[..., None]
        )
        v = np.array(MOTIONS[obj["motion"]]) * SPEED
        for t in range(frames):
            cx, cy = np.array(obj["position_t0"]) + v * (t + 1 - t0)
            window = (slice(cy - r, cy + r + 1), slice(cx - r, cx + r + 1))
            video[t][window][mask] = texture[mask]
            labels[t][window][mask] = obj["instance_id"] + 1
            if t < frames - 1:
                flow[t][(slice(None), *window)][:, mask] = v[:, None]
    return np.clip(np.rint(video), 0, 255).astype(np.uint8), labels, flow


def _save_png(path: Path, image: np.ndarray) -> None:
    Image.fromarray(image).save(path, compress_level=1)


def _write_mp4(path: Path, video: np.ndarray) -> None:
    from tbvs.flow import import_cv2

    cv2 = import_cv2()
    h, w = video.shape[1:3]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 24, (w, h))
    if not writer.isOpened():
        raise UserError(f"OpenCV cannot write {path}: install an OpenCV build with FFmpeg or drop mp4=True")
    for frame in video:
        writer.write(frame[..., ::-1])
    writer.release()


def _write_a2d_video(
    out: Path, vid: str, video: np.ndarray, labels: np.ndarray, objects: list, annotated: list[int]
) -> None:
    frames_dir = out / "Release" / "frames" / vid
    frames_dir.mkdir(parents=True)
    for t, frame in enumerate(video, start=1):
        _save_png(frames_dir / f"{t:05d}.png", frame)
    h5_dir = out / "text_annotations" / "a2d_annotation_with_instances" / vid
    h5_dir.mkdir(parents=True)
    ids = np.array([o["instance_id"] for o in objects], dtype=np.int64)
    for t in annotated:
        masks = (labels[t - 1][None] == (ids[:, None, None] + 1)).astype(np.uint8)
        re_mask = masks.transpose(0, 2, 1)  # A2D stores (N, W, H), or (W, H) for one instance
        with h5py.File(h5_dir / f"{t:05d}.h5", "w") as f:
            f.create_dataset("instance", data=ids)
            f.create_dataset("reMask", data=re_mask[0] if len(ids) == 1 else re_mask)


def _write_jhmdb_video(out: Path, vid: str, video: np.ndarray, labels: np.ndarray) -> None:
    frames_dir = out / "Rename_Images" / "synthetic" / vid
    frames_dir.mkdir(parents=True)
    for t, frame in enumerate(video, start=1):
        _save_png(frames_dir / f"{t:05d}.png", frame)
    mask_dir = out / "puppet_mask" / "synthetic" / vid
    mask_dir.mkdir(parents=True)
    part_mask = (labels == 1).astype(np.uint8).transpose(1, 2, 0)  # H×W×T, the described target only
    scipy.io.savemat(mask_dir / "puppet_mask.mat", {"part_mask": part_mask}, do_compression=True)


def _write_csv(path: Path, header: list[str] | None, rows: list) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        if header:
            writer.writerow(header)
        writer.writerows(rows)


def make_synthetic(
    out: str | os.PathLike,
    *,
    fmt: str = "a2d",
    train_videos: int = 160,
    test_videos: int = 40,
    size: int = 96,
    frames: int = 9,
    seed: int = 0,
    oracle_flow: bool = True,
    mp4: bool = False,
) -> dict[str, Any]:
    """Write the synthetic set under ``out`` in the raw A2D (``fmt='a2d'``) or J-HMDB format; return meta.

    A2D: ``train_videos`` + ``test_videos`` videos plus one extra train video listed in
    ``a2d_missed_videos.txt`` (readers must exclude it) and a duplicate ``1 (copy)`` annotation row, as in
    the real release (readers must drop it). ``mp4=True`` also writes ``Release/clips320H/<vid>.mp4``.
    J-HMDB is an evaluation set: ``test_videos`` videos, one described target (instance 0) each.
    The returned dict (also ``meta.json``) holds the parameters, the sample counts a reader should find
    and every object's shape, colour, radius, motion and (x, y) position at the middle frame.
    """
    if fmt not in ("a2d", "jhmdb"):
        raise UserError(f"unknown format {fmt!r}: choose a2d or jhmdb")
    if frames < 5:
        raise UserError(f"--frames must be at least 5 (annotated frames t0-1..t0+1 need neighbours), got {frames}")
    if min(train_videos, test_videos) < 0 or train_videos + test_videos < 1:
        raise UserError("the synthetic set needs at least one video: raise --train-videos or --test-videos")
    out = Path(out)
    if out.exists() and any(out.iterdir()):
        raise UserError(f"output folder {out} is not empty: choose a new --out or delete it")
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    annotated = annotated_frames(frames)
    # A2D: one extra train video that a2d_missed_videos.txt excludes; J-HMDB is a test set
    splits = ["train"] * train_videos + ["test"] * test_videos + ["train"] if fmt == "a2d" else ["test"] * test_videos
    missed = [f"synv{len(splits) - 1:07d}"] if fmt == "a2d" else []
    videos: dict[str, Any] = {}
    queries, subsets, videoset = [], [], []
    counts = {"train": 0, "test": 0}
    for index, split in enumerate(splits):
        vid = f"synv{index:07d}"
        kind = SUBSET_KINDS[int(rng.integers(2))]
        objects = _sample_objects(rng, kind)
        _place(rng, objects, size, frames)
        video, labels, flow = _render(rng, objects, size, frames)
        described = objects if fmt == "a2d" else objects[:1]
        for obj in described:
            obj["query"] = _sentence(rng, obj, need_motion=kind == "ambiguous")
            queries.append([vid, obj["instance_id"], obj["query"]] if fmt == "a2d" else [vid, obj["query"]])
            subsets.append([vid, obj["instance_id"], kind])
            if vid not in missed:
                counts[split] += len(annotated) if fmt == "a2d" else 1
        videos[vid] = {"split": split, "subset": kind, "objects": objects}
        if fmt == "a2d":
            _write_a2d_video(out, vid, video, labels, objects, annotated)
            videoset.append([vid, 0, 0, frames, size, size, frames, len(annotated), int(split == "test")])
            if mp4:
                (out / "Release" / "clips320H").mkdir(parents=True, exist_ok=True)
                _write_mp4(out / "Release" / "clips320H" / f"{vid}.mp4", video)
        else:
            _write_jhmdb_video(out, vid, video, labels)
        if oracle_flow:
            flow_dir = out / "oracle_flow" / vid
            flow_dir.mkdir(parents=True)
            for t, f in enumerate(flow, start=1):
                np.save(flow_dir / f"{t:05d}.npy", f)
    if fmt == "a2d":
        text = out / "text_annotations"
        copy_row = next(q for q in queries if q[1] == 1 and videos[q[0]]["split"] == "train")
        queries.insert(queries.index(copy_row) + 1, [copy_row[0], "1 (copy)", copy_row[2]])
        _write_csv(out / "Release" / "videoset.csv", None, videoset)
        _write_csv(text / "a2d_annotation.txt", ["video_id", "instance_id", "query"], queries)
        (text / "a2d_missed_videos.txt").write_text("".join(f"{v}\n" for v in missed))
    else:
        _write_csv(out / "jhmdb_annotation.txt", ["video_id", "query"], queries)
    _write_csv(out / SUBSETS_FILE, ["video_id", "instance_id", "subset"], subsets)
    meta = {
        "generator": "tbvs.synthetic",
        "version": GENERATOR_VERSION,
        "format": fmt,
        "seed": seed,
        "size": size,
        "frames": frames,
        "annotated_frames": annotated,
        "speed": SPEED,
        "train_videos": splits.count("train") - len(missed),
        "test_videos": splits.count("test"),
        "missed_videos": missed,
        "queries": len(queries),
        "samples": counts,
        "oracle_flow": oracle_flow,
        "vocabulary": VOCABULARY,
        "videos": videos,
    }
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return meta

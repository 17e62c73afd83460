"""A2D Sentences and J-HMDB Sentences: the raw readers, the TBVS prepared layout and the clip dataset.

Raw A2D Sentences (Gavrilyuk et al., CVPR 2018) as released: ``Release/videoset.csv`` (no header: vid,
label, start, end, height, width, total frames, annotated frames, subset 0 = train / 1 = test),
``text_annotations/a2d_annotation.txt`` (video_id,instance_id,query), ``a2d_missed_videos.txt`` and
``a2d_annotation_with_instances/<vid>/<frame:05d>.h5`` holding ``instance`` and the masks ``reMask`` stored
transposed, (N, W, H) or (W, H) for one instance; frame numbers are 1-based. One sample per (video,
instance, query) and annotated frame whose ``instance`` holds the id, as in the A2D readers of CMPC-V and MTTR.
Raw J-HMDB Sentences: ``Rename_Images/<action>/<vid>/<frame:05d>.png``, ``puppet_mask/<action>/<vid>/
puppet_mask.mat`` (``part_mask`` H×W×T) and ``jhmdb_annotation.txt`` (video_id,query).

The official TBVS loaders read a prepared layout instead, written here by :func:`prepare_a2d` and
:func:`prepare_jhmdb`: ``A2D/allframes/<vid>.mp4/<frame:05d>.png`` (every frame), ``A2D/allframes_flow/
<vid>.mp4/<frame:05d>.png`` (flow t→t+1 as a colour-wheel image), ``A2D/Annotations_visualize/<vid>/
<frame:05d>.png`` (palette PNG, pixel = instance_id + 1) and ``A2D/a2d_txt/{train,test}.txt`` with lines
``vid/frame,<label>,<subset>,<instance_id>,<query>`` (the query may hold commas: split with maxsplit=4);
J-HMDB the same under ``J-HMDB/`` with ``<vid>`` folders and ``jhmdb_txt/test.txt``.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import scipy.io
import torch
from PIL import Image
from torch.utils.data import Dataset

from shared.data import open_image
from shared.errors import UserError, require_path
from shared.logging import get_logger
from tbvs.flow import FLOW_METHODS, RaftFlow, estimate_video_flow, flow_to_rgb, import_cv2
from tbvs.postprocess import letterbox
from tbvs.synthetic import SUBSETS_FILE

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
BAD_INSTANCE_ID = "1 (copy)"  # a duplicated row of video T6bNPuKV-wY in a2d_annotation.txt
PREPARE_FLOWS = (*FLOW_METHODS, "oracle", "none")
SPLITS = {"train": 0, "test": 1}
SUBSETS_JSON = "subsets.json"


@dataclass(frozen=True)
class VideoRecord:
    """One row of A2D's ``videoset.csv``."""

    video: str
    label: int
    height: int
    width: int
    total_frames: int
    subset: int  # 0 = train, 1 = test


@dataclass(frozen=True)
class Sample:
    """One referring sample: the sentence ``query`` names ``instance_id`` in annotated ``frame`` of ``video``."""

    video: str
    instance_id: int
    frame: int
    query: str
    label: int = 0


def _split_flag(split: str) -> int:
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}: choose train or test")
    return SPLITS[split]


def _read_rows(path: Path, what: str) -> list[list[str]]:
    path = require_path(path, what, kind="file")
    with open(path, newline="") as f:
        return [row for row in csv.reader(f) if row and any(cell.strip() for cell in row)]


def read_videoset(path: str | os.PathLike) -> dict[str, VideoRecord]:
    """A2D's ``Release/videoset.csv`` (no header, nine columns) as ``{video: VideoRecord}``."""
    records = {}
    for n, row in enumerate(_read_rows(Path(path), "A2D videoset.csv"), start=1):
        try:
            vid, label, _, _, height, width, total, _, subset = row
            records[vid] = VideoRecord(vid, int(label), int(height), int(width), int(total), int(subset))
        except ValueError:
            raise UserError(
                f"{path} line {n} is not 'vid,label,start,end,height,width,frames,annotated,subset': "
                "use the videoset.csv of the A2D release"
            ) from None
    return records


def read_a2d_annotations(path: str | os.PathLike) -> list[tuple[str, int, str]]:
    """``(video, instance_id, query)`` rows of ``a2d_annotation.txt``; the known bad ``1 (copy)`` row is dropped."""
    rows = _read_rows(Path(path), "A2D annotation file")
    if rows and rows[0][:2] == ["video_id", "instance_id"]:
        rows = rows[1:]
    out, dropped = [], 0
    for n, row in enumerate(rows, start=2):
        if len(row) < 3:
            raise UserError(f"{path} line {n} is not 'video_id,instance_id,query': fix or delete the line")
        vid, iid, query = row[0], row[1].strip(), ",".join(row[2:])
        if iid == BAD_INSTANCE_ID:
            dropped += 1
            continue
        try:
            out.append((vid, int(iid), query))
        except ValueError:
            raise UserError(f"{path} line {n}: instance id {iid!r} is not an integer: fix or delete the line") from None
    if dropped:
        get_logger().warning("dropped %d annotation row(s) with instance id %r from %s", dropped, BAD_INSTANCE_ID, path)
    return out


def read_missed_videos(path: str | os.PathLike) -> set[str]:
    """The ids of ``a2d_missed_videos.txt`` (videos without usable annotations, excluded by every reader)."""
    text = require_path(path, "A2D missed-videos list", kind="file").read_text()
    return {line.strip() for line in text.splitlines() if line.strip()}


def read_instance_masks(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Instance ids (N,) and boolean masks (N, H, W) of one A2D ``.h5`` file (``reMask`` is stored transposed)."""
    try:
        with h5py.File(path, "r") as f:
            ids = np.asarray(f["instance"]).astype(np.int64).ravel()
            masks = np.asarray(f["reMask"])
    except (OSError, KeyError) as exc:
        raise UserError(f"cannot read A2D instance masks {path} ({exc}): replace the file from the release") from None
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3 or len(masks) != len(ids):
        raise UserError(f"{path}: reMask of shape {masks.shape} does not match {len(ids)} instance id(s)")
    return ids, masks.transpose(0, 2, 1) > 0


def _h5_frames(raw: Path, vid: str) -> dict[int, Path]:
    folder = raw / "text_annotations" / "a2d_annotation_with_instances" / vid
    files = sorted(folder.glob("*.h5"))
    if not files:
        raise UserError(f"no instance masks in {folder}: copy a2d_annotation_with_instances from the A2D release")
    return {_frame_number(p): p for p in files}


def _frame_number(path: Path) -> int:
    try:
        return int(path.stem)
    except ValueError:
        raise UserError(f"{path}: file names must be frame numbers like 00001{path.suffix}: rename it") from None


def build_a2d_samples(raw_root: str | os.PathLike, split: str) -> list[Sample]:
    """The samples of ``split`` ('train' or 'test') of a raw A2D Sentences folder, sorted by (video, id, frame).

    Videos listed in ``a2d_missed_videos.txt`` are excluded; a sentence whose instance appears in no
    annotated frame is an error.
    """
    raw = require_path(raw_root, "raw A2D Sentences folder", kind="dir")
    flag = _split_flag(split)
    videos = read_videoset(raw / "Release" / "videoset.csv")
    text = raw / "text_annotations"
    missed = read_missed_videos(text / "a2d_missed_videos.txt")
    rows = read_a2d_annotations(text / "a2d_annotation.txt")
    unknown = sorted({vid for vid, _, _ in rows} - set(videos))
    if unknown:
        get_logger().warning(
            "skipped the sentences of %d video(s) not in videoset.csv, e.g. %s", len(unknown), unknown[0]
        )
    samples = []
    for vid, iid, query in sorted(r for r in rows if r[0] in videos and r[0] not in missed):
        record = videos[vid]
        if record.subset != flag:
            continue
        frames = [t for t, p in _h5_frames(raw, vid).items() if iid in _h5_ids(p)]
        if not frames:
            raise UserError(
                f"A2D sentence {query!r} names instance {iid} of video {vid}, which has no mask in any annotated "
                "frame: fix a2d_annotation.txt or the video's .h5 files"
            )
        samples += [Sample(vid, iid, t, query, record.label) for t in sorted(frames)]
    return samples


def _h5_ids(path: Path) -> set[int]:
    try:
        with h5py.File(path, "r") as f:
            return set(np.asarray(f["instance"]).astype(np.int64).ravel().tolist())
    except (OSError, KeyError) as exc:
        raise UserError(f"cannot read A2D instance masks {path} ({exc}): replace the file from the release") from None


def read_jhmdb_annotations(path: str | os.PathLike) -> list[tuple[str, str]]:
    """``(video, query)`` rows of ``jhmdb_annotation.txt`` (header video_id,query; one sentence per video)."""
    rows = _read_rows(Path(path), "J-HMDB annotation file")
    if rows and rows[0][:2] == ["video_id", "query"]:
        rows = rows[1:]
    bad = [n for n, row in enumerate(rows, start=2) if len(row) < 2]
    if bad:
        raise UserError(f"{path} line {bad[0]} is not 'video_id,query': fix or delete the line")
    return [(row[0], ",".join(row[1:])) for row in rows]


def read_puppet_mask(path: str | os.PathLike) -> np.ndarray:
    """J-HMDB ``puppet_mask.mat``: ``part_mask`` H×W×T transposed to (T, H, W) uint8 {0, 1}."""
    try:
        mask = scipy.io.loadmat(path)["part_mask"]
    except (OSError, KeyError, ValueError) as exc:
        raise UserError(f"cannot read J-HMDB puppet mask {path} ({exc}): replace the file from the release") from None
    return (np.asarray(mask).transpose(2, 0, 1) > 0).astype(np.uint8)


def _jhmdb_video_dirs(raw: Path) -> dict[str, Path]:
    """``{video: Rename_Images/<action>/<video>}`` (the action folder is not in the annotation file)."""
    images = require_path(raw / "Rename_Images", "J-HMDB Rename_Images folder", kind="dir")
    return {p.name: p for p in sorted(images.glob("*/*")) if p.is_dir()}


def build_jhmdb_samples(raw_root: str | os.PathLike, frames_per_video: int = 3) -> list[Sample]:
    """J-HMDB samples: per video ``frames_per_video`` evenly spaced interior frames among those with a mask.

    Frames past the last puppet mask are never used (the masks of the last frames can be missing).
    """
    raw = require_path(raw_root, "raw J-HMDB Sentences folder", kind="dir")
    dirs = _jhmdb_video_dirs(raw)
    samples = []
    for vid, query in read_jhmdb_annotations(raw / "jhmdb_annotation.txt"):
        if vid not in dirs:
            raise UserError(f"J-HMDB video {vid} has no frame folder under {raw / 'Rename_Images'}: add its frames")
        n = min(len(list(dirs[vid].glob("*.png"))), len(read_puppet_mask(_puppet_path(raw, dirs[vid]))))
        if n == 0:
            raise UserError(f"J-HMDB video {vid} has no frames with masks: check {dirs[vid]} and its puppet_mask.mat")
        frames = np.unique(np.rint(np.linspace(1, n, frames_per_video + 2)[1:-1]).astype(int))
        samples += [Sample(vid, 0, int(t), query) for t in frames]
    return samples


def _puppet_path(raw: Path, video_dir: Path) -> Path:
    return raw / "puppet_mask" / video_dir.parent.name / video_dir.name / "puppet_mask.mat"


def _palette() -> list[int]:
    """The PASCAL VOC colour map (index 0 black), used by DAVIS-style palette masks."""
    idx = np.arange(256)
    colours = np.zeros((256, 3), dtype=np.int64)
    for bit in range(8):
        for c in range(3):
            colours[:, c] |= ((idx >> (3 * bit + c)) & 1) << (7 - bit)
    return colours.ravel().tolist()


PALETTE = _palette()


def save_palette_png(path: Path, labels: np.ndarray) -> None:
    """Save an (H, W) uint8 label map as a palette PNG (pixel value = label)."""
    image = Image.fromarray(labels.astype(np.uint8))
    image.putpalette(PALETTE)  # an "L" image becomes "P" with the same pixel values
    image.save(path)


def _read_raw_frames(png_dir: Path | None, mp4: Path | None, what: str) -> tuple[list[int], list[np.ndarray]]:
    """Frame numbers and RGB uint8 frames of a video, from numbered PNGs or decoded from an mp4 (1-based)."""
    if png_dir is not None and png_dir.is_dir():
        files = sorted(png_dir.glob("*.png"), key=_frame_number)
        if files:
            return [_frame_number(p) for p in files], [np.asarray(open_image(p)) for p in files]
    if mp4 is not None and mp4.is_file():
        cv2 = import_cv2()
        capture = cv2.VideoCapture(str(mp4))
        frames = []
        while True:
            ok, frame = capture.read()
            if not ok:
                break
            frames.append(np.ascontiguousarray(frame[..., ::-1]))
        capture.release()
        if frames:
            return list(range(1, len(frames) + 1)), frames
    raise UserError(f"{what} has no frames (looked for {png_dir} and {mp4}): extract the frames or add the video")


def _video_flows(method, frames: list[np.ndarray], numbers: list[int], oracle_dir: Path) -> list[np.ndarray]:
    if isinstance(method, RaftFlow) or method in FLOW_METHODS:
        return estimate_video_flow(frames, method)
    if method == "none":
        return [np.zeros((2, *frames[0].shape[:2]), dtype=np.float32) for _ in frames]
    flows = []
    for t in numbers[:-1]:
        path = oracle_dir / f"{t:05d}.npy"
        if not path.is_file():
            raise UserError(
                f"oracle flow {path} not found: regenerate the synthetic set with oracle flow or use --flow farneback"
            )
        flows.append(np.load(path).astype(np.float32))
    flows.append(flows[-1].copy() if flows else np.zeros((2, *frames[0].shape[:2]), dtype=np.float32))
    return flows


def _write_video(
    dest_frames: Path, dest_flow: Path, numbers: list[int], frames: list[np.ndarray], flows: list[np.ndarray]
) -> None:
    dest_frames.mkdir(parents=True)
    dest_flow.mkdir(parents=True)
    for t, frame, flow in zip(numbers, frames, flows, strict=True):
        if flow.shape[1:] != frame.shape[:2]:
            raise UserError(f"flow of {dest_frames.name} frame {t} is {flow.shape[1:]}, the frame {frame.shape[:2]}")
        Image.fromarray(frame).save(dest_frames / f"{t:05d}.png", compress_level=1)
        Image.fromarray(flow_to_rgb(flow)).save(dest_flow / f"{t:05d}.png", compress_level=1)


def write_list_file(path: Path, samples: Sequence[Sample], split_flag: int) -> None:
    """Write ``vid/frame,<label>,<subset>,<instance_id>,<query>`` lines (the TBVS list-file convention)."""
    path.write_text(
        "".join(f"{s.video}/{s.frame:05d},{s.label},{split_flag},{s.instance_id},{s.query}\n" for s in samples)
    )


def read_list_file(path: str | os.PathLike) -> list[Sample]:
    """Samples of a TBVS list file; fields 1–2 (label, subset) are kept only as ``label``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"list file {path} not found: run tbvs-prepare to write the prepared layout")
    samples = []
    for n, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split(",", maxsplit=4)
        try:
            vid, frame = fields[0].rsplit("/", 1)
            samples.append(Sample(vid, int(fields[3]), int(frame), fields[4], int(fields[1] or 0)))
        except (ValueError, IndexError):
            raise UserError(
                f"{path} line {n} is not 'vid/frame,label,subset,instance_id,query': "
                "fix the line or re-run tbvs-prepare"
            ) from None
    if not samples:
        raise UserError(f"list file {path} holds no samples: re-run tbvs-prepare")
    return samples


def _read_subsets(raw: Path) -> dict[str, dict[str, str]]:
    path = raw / SUBSETS_FILE
    if not path.is_file():
        return {}
    subsets: dict[str, dict[str, str]] = {}
    for row in _read_rows(path, "synthetic subsets file")[1:]:
        subsets.setdefault(row[0], {})[row[1]] = row[2]
    return subsets


def _new_dataset_dir(dest: str | os.PathLike, name: str) -> Path:
    base = Path(dest) / name
    if base.exists() and any(base.iterdir()):
        raise UserError(f"{base} already exists: choose another --dest or delete it")
    base.mkdir(parents=True, exist_ok=True)
    return base


def _check_flow(flow) -> None:
    if not isinstance(flow, RaftFlow) and flow not in PREPARE_FLOWS:
        raise UserError(f"unknown flow {flow!r}: choose one of {', '.join(PREPARE_FLOWS)}")


def prepare_a2d(
    raw: str | os.PathLike, dest: str | os.PathLike, flow: str = "farneback", frames_from: str = "auto"
) -> dict[str, Any]:
    """Write the TBVS prepared layout ``<dest>/A2D`` from a raw A2D Sentences folder; return the counts.

    Frames come from ``Release/frames/<vid>/*.png`` or are decoded from ``Release/clips320H/<vid>.mp4``
    (``frames_from`` 'png', 'mp4' or 'auto' = PNGs when present). ``flow`` is 'farneback', 'horn_schunck',
    'oracle' (the synthetic generator's exact flow), 'none' (zero flow, rendered white) or a
    :class:`tbvs.flow.RaftFlow` (:func:`tbvs.flow.flow_estimator`); the last frame
    reuses the flow (F−1 → F). Synthetic subset kinds go to ``a2d_txt/subsets.json``.
    """
    _check_flow(flow)
    if frames_from not in ("auto", "png", "mp4"):
        raise UserError(f"unknown frame source {frames_from!r}: choose auto, png or mp4")
    raw = require_path(raw, "raw A2D Sentences folder", kind="dir")
    samples = {split: build_a2d_samples(raw, split) for split in SPLITS}
    base = _new_dataset_dir(dest, "A2D")
    videos = sorted({s.video for split_samples in samples.values() for s in split_samples})
    for vid in videos:
        png_dir = raw / "Release" / "frames" / vid if frames_from != "mp4" else None
        mp4 = raw / "Release" / "clips320H" / f"{vid}.mp4" if frames_from != "png" else None
        numbers, frames = _read_raw_frames(png_dir, mp4, f"A2D video {vid}")
        flows = _video_flows(flow, frames, numbers, raw / "oracle_flow" / vid)
        _write_video(base / "allframes" / f"{vid}.mp4", base / "allframes_flow" / f"{vid}.mp4", numbers, frames, flows)
        mask_dir = base / "Annotations_visualize" / vid
        mask_dir.mkdir(parents=True)
        for t, h5 in _h5_frames(raw, vid).items():
            ids, masks = read_instance_masks(h5)
            if masks.shape[1:] != frames[0].shape[:2]:
                raise UserError(
                    f"{h5}: masks are {masks.shape[1:]} but the frames {frames[0].shape[:2]}: check the video"
                )
            labels = np.zeros(masks.shape[1:], dtype=np.uint8)
            for iid, mask in zip(ids, masks, strict=True):
                labels[mask] = iid + 1
            save_palette_png(mask_dir / f"{t:05d}.png", labels)
    lists = base / "a2d_txt"
    lists.mkdir()
    for split, flag in SPLITS.items():
        write_list_file(lists / f"{split}.txt", samples[split], flag)
    _write_subsets_json(lists, raw, videos)
    flow_name = getattr(flow, "name", flow)
    return {"train": len(samples["train"]), "test": len(samples["test"]), "videos": len(videos), "flow": flow_name}


def _write_subsets_json(lists: Path, raw: Path, videos: list[str]) -> None:
    subsets = _read_subsets(raw)
    if subsets:
        kept = {v: subsets[v] for v in videos if v in subsets}
        (lists / SUBSETS_JSON).write_text(json.dumps(kept, indent=1, sort_keys=True))


def prepare_jhmdb(raw: str | os.PathLike, dest: str | os.PathLike, flow: str = "farneback") -> dict[str, Any]:
    """Write ``<dest>/J-HMDB`` (frames, flow, masks with value 1, ``jhmdb_txt/test.txt``) from raw J-HMDB Sentences."""
    _check_flow(flow)
    raw = require_path(raw, "raw J-HMDB Sentences folder", kind="dir")
    samples = build_jhmdb_samples(raw)
    dirs = _jhmdb_video_dirs(raw)
    base = _new_dataset_dir(dest, "J-HMDB")
    videos = sorted({s.video for s in samples})
    for vid in videos:
        numbers, frames = _read_raw_frames(dirs[vid], None, f"J-HMDB video {vid}")
        flows = _video_flows(flow, frames, numbers, raw / "oracle_flow" / vid)
        _write_video(base / "allframes" / vid, base / "allframes_flow" / vid, numbers, frames, flows)
        masks = read_puppet_mask(_puppet_path(raw, dirs[vid]))
        if masks.shape[1:] != frames[0].shape[:2]:
            raise UserError(f"J-HMDB {vid}: puppet masks are {masks.shape[1:]} but frames {frames[0].shape[:2]}")
        mask_dir = base / "Annotations_visualize" / vid
        mask_dir.mkdir(parents=True)
        for t, mask in zip(numbers, masks, strict=False):
            save_palette_png(mask_dir / f"{t:05d}.png", mask)
    lists = base / "jhmdb_txt"
    lists.mkdir()
    write_list_file(lists / "test.txt", samples, SPLITS["test"])
    _write_subsets_json(lists, raw, videos)
    return {"test": len(samples), "videos": len(videos), "flow": getattr(flow, "name", flow)}


_LAYOUTS = {"a2d": ("A2D", "a2d_txt", ".mp4"), "jhmdb": ("J-HMDB", "jhmdb_txt", "")}


def _grey_t(x: torch.Tensor) -> torch.Tensor:
    return (0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2]).unsqueeze(1)


def color_jitter(x: torch.Tensor, factors: Sequence[float], order: Sequence[int]) -> torch.Tensor:
    """ColorJitter of (T, 3, H, W) images in [0, 1] with fixed factors (brightness, contrast, saturation, hue).

    Like ``torchvision.transforms.ColorJitter`` with its random draw replaced by ``factors`` and ``order``,
    so every frame and flow image of a clip gets the same jitter. Hue rotates chroma in YIQ space.
    """
    for op in order:
        f = factors[op]
        if op == 0:
            x = x * f
        elif op == 1:
            mean = _grey_t(x).mean(dim=(1, 2, 3), keepdim=True)
            x = f * x + (1 - f) * mean
        elif op == 2:
            x = f * x + (1 - f) * _grey_t(x)
        elif f != 0:
            yiq = torch.tensor([[0.299, 0.587, 0.114], [0.596, -0.274, -0.322], [0.211, -0.523, 0.312]])
            c, s = np.cos(2 * np.pi * f), np.sin(2 * np.pi * f)
            rot = torch.tensor([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]], dtype=torch.float32)
            x = torch.einsum("ij,tjhw->tihw", torch.linalg.inv(yiq) @ rot @ yiq, x)
        x = x.clamp(0, 1)
    return x


class ClipDataset(Dataset):
    """Clips of the TBVS prepared layout: T frames, their flow images and the mask of the last frame.

    Train clips are [t − u, t + u', t] with u, u' ~ U{1..max_ref_offset}; test clips [t − 1, t + 1, t];
    ``clip_len=1`` gives [t]. Reference indices are clamped into the video (the official loader wraps
    below 0 and fails past the end). Frames and flow images are letterboxed to ``size``×``size``
    (``ResizeAndPad``), colour-jittered alike in training (one draw per sample from a generator seeded by
    (seed, epoch, index); call :meth:`set_epoch`) and ImageNet-normalised. ``shuffle_flow`` takes the
    flow of another video of the split (a fixed derangement), the test-time control showing flow is used.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        *,
        size: int = 320,
        clip_len: int = 3,
        max_ref_offset: int = 5,
        train: bool | None = None,
        color_jitter: Sequence[float] = (0.1, 0.05, 0.05, 0.0),
        dataset: str = "a2d",
        seed: int = 0,
        shuffle_flow: bool = False,
    ) -> None:
        if dataset not in _LAYOUTS:
            raise UserError(f"unknown dataset {dataset!r}: choose a2d or jhmdb")
        if clip_len not in (1, 3):
            raise UserError(f"clip length must be 1 or 3 (the annotated frame is the last of the clip), got {clip_len}")
        if max_ref_offset < 1:
            raise UserError(f"max reference offset must be at least 1, got {max_ref_offset}")
        folder, list_dir, suffix = _LAYOUTS[dataset]
        root = Path(root)
        self.base = root / folder if (root / folder).is_dir() else root
        self.dataset, self.suffix = dataset, suffix
        self.size, self.clip_len, self.max_ref_offset = size, clip_len, max_ref_offset
        self.train = split == "train" if train is None else train
        self.jitter = tuple(float(v) for v in color_jitter)
        self.seed, self.epoch = seed, 0
        self.samples = read_list_file(self.base / list_dir / f"{split}.txt")
        subsets_path = self.base / list_dir / SUBSETS_JSON
        self.subsets = json.loads(subsets_path.read_text()) if subsets_path.is_file() else {}
        self.videos = sorted({s.video for s in self.samples})
        self.frames = {v: self._list_frames(v) for v in self.videos}
        self._frame_index = {v: {name: i for i, name in enumerate(names)} for v, names in self.frames.items()}
        for s in self.samples:
            if f"{s.frame:05d}.png" not in self._frame_index[s.video]:
                raise UserError(f"frame {s.frame} of {s.video} is listed but not in {self._frame_dir(s.video)}")
            if not self._mask_path(s).is_file():
                raise UserError(f"mask {self._mask_path(s)} not found: re-run tbvs-prepare")
        self.flow_source = {v: v for v in self.videos}
        if shuffle_flow:
            if len(self.videos) < 2:
                raise UserError("shuffled flow needs at least two videos in the split")
            order = np.random.default_rng(seed).permutation(len(self.videos))
            self.flow_source = {self.videos[a]: self.videos[b] for a, b in zip(order, np.roll(order, -1), strict=True)}

    def _frame_dir(self, video: str, kind: str = "allframes") -> Path:
        return self.base / kind / f"{video}{self.suffix}"

    def _mask_path(self, s: Sample) -> Path:
        return self.base / "Annotations_visualize" / s.video / f"{s.frame:05d}.png"

    def _list_frames(self, video: str) -> list[str]:
        names = sorted(p.name for p in self._frame_dir(video).glob("*.png"))
        if not names:
            raise UserError(f"video folder {self._frame_dir(video)} has no frames: re-run tbvs-prepare")
        missing = sorted(set(names) - {p.name for p in self._frame_dir(video, "allframes_flow").glob("*.png")})
        if missing:
            raise UserError(
                f"{len(missing)} frame(s) of {video} have no flow image in {self._frame_dir(video, 'allframes_flow')} "
                f"(first {missing[0]}): re-run tbvs-prepare with --flow"
            )
        return names

    def set_epoch(self, epoch: int) -> None:
        """Select the random offsets and jitter of ``epoch`` (training clips are reproducible per epoch)."""
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.samples)

    def clip_indices(self, index: int, rng: np.random.Generator | None = None) -> list[int]:
        """Positions in the video's sorted frame list of the clip of sample ``index`` (target last)."""
        s = self.samples[index]
        t = self._frame_index[s.video][f"{s.frame:05d}.png"]
        last = len(self.frames[s.video]) - 1
        if self.clip_len == 1:
            return [t]
        if self.train:
            rng = rng if rng is not None else self._rng(index)
            back, forward = rng.integers(1, self.max_ref_offset + 1, size=2)
            return [max(t - int(back), 0), min(t + int(forward), last), t]
        return [max(t - 1, 0), min(t + 1, last), t]

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def _read_stack(self, folder: Path, names: list[str], hw: tuple[int, ...] | None = None) -> torch.Tensor:
        """(T, 3, H, W) uint8 images; every one must be ``hw`` (default: the first image's size)."""
        images = [np.asarray(open_image(folder / n)) for n in names]
        hw = hw or images[0].shape[:2]
        for name, image in zip(names, images, strict=True):
            if image.shape[:2] != hw:
                raise UserError(
                    f"{folder / name} is {image.shape[0]}x{image.shape[1]} but the frames of its clip are "
                    f"{hw[0]}x{hw[1]}: re-run tbvs-prepare"
                )
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)

    def _read_label(self, s: Sample) -> np.ndarray:
        label = np.asarray(open_image(self._mask_path(s), "P"))
        if self.dataset == "jhmdb":
            label = np.where(label == 255, 1, label)  # J-HMDB masks of the official release use 255
        return label

    def gt_mask(self, index: int) -> torch.Tensor:
        """The annotated frame's mask of sample ``index`` at its original resolution, bool (H, W)."""
        s = self.samples[index]
        return torch.from_numpy(self._read_label(s) == s.instance_id + 1)

    def __getitem__(self, index: int) -> dict[str, Any]:
        s = self.samples[index]
        rng = self._rng(index)
        clip = self.clip_indices(index, rng)
        names = [self.frames[s.video][i] for i in clip]
        images = self._read_stack(self._frame_dir(s.video), names)
        flow_video = self.flow_source[s.video]
        if flow_video == s.video:  # flow t→t+1 must be pixel-aligned with its frame
            flows = self._read_stack(self._frame_dir(s.video, "allframes_flow"), names, tuple(images.shape[-2:]))
        else:
            other = self.frames[flow_video]
            other_names = [other[min(i, len(other) - 1)] for i in clip]
            flows = self._read_stack(self._frame_dir(flow_video, "allframes_flow"), other_names)
        label = self._read_label(s)
        if label.shape != tuple(images.shape[-2:]):
            raise UserError(f"mask {self._mask_path(s)} is {label.shape} but the frames {tuple(images.shape[-2:])}")
        images, flows = images.float() / 255, flows.float() / 255
        if self.train and any(self.jitter):
            b, c, sat, hue = self.jitter
            factors = [
                rng.uniform(1 - b, 1 + b),
                rng.uniform(1 - c, 1 + c),
                rng.uniform(1 - sat, 1 + sat),
                rng.uniform(-hue, hue),
            ]
            order = rng.permutation(4).tolist()
            images, flows = color_jitter(images, factors, order), color_jitter(flows, factors, order)
        images, params = letterbox(images, self.size, mode="image")
        flows, _ = letterbox(flows, self.size, mode="image")
        mask, _ = letterbox(torch.from_numpy(label == s.instance_id + 1)[None], self.size, mode="mask")
        mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
        std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        return {
            "images": (images.clamp(0, 1) - mean) / std,
            "flows": (flows.clamp(0, 1) - mean) / std,
            "mask": mask.float(),
            "query": s.query,
            "instance_id": s.instance_id,
            "video": s.video,
            "frame": s.frame,
            "subset": self.subsets.get(s.video, {}).get(str(s.instance_id), ""),
            "clip_frames": torch.tensor([int(Path(n).stem) for n in names]),
            "orig_size": torch.tensor([params.height, params.width]),
            "letterbox": torch.tensor([params.new_height, params.new_width, params.top, params.left]),
            "index": index,
        }

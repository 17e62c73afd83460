"""Optical flow t→t+1 and its colour-wheel rendering, the motion input of TBVS (Zhao et al., CVPR 2022).

The official code feeds RAFT flow rendered as an RGB image (RAFT's ``flow_viz``, the Middlebury colour
wheel of Baker et al., ICCV 2007). RAFT weights need a download, so flow here is OpenCV Farneback (the
default), a coarse-to-fine Horn–Schunck in pure PyTorch (no OpenCV), the exact flow written by the
synthetic generator, or RAFT from a local torchvision checkpoint (:class:`RaftFlow`). Flows are float32
arrays ``(2, H, W)`` holding (dx, dy) in pixels, indexed by the pixels of the earlier frame.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from shared.data import is_image_file, open_image
from shared.errors import UserError, require_path

FARNEBACK_PARAMS = {
    "pyr_scale": 0.5,
    "levels": 3,
    "winsize": 15,
    "iterations": 3,
    "poly_n": 5,
    "poly_sigma": 1.2,
    "flags": 0,
}


def import_cv2():
    """The cv2 module, or a UserError naming the package to install."""
    try:
        import cv2
    except ImportError:
        raise UserError(
            "OpenCV is needed for Farneback flow and mp4 decoding: pip install opencv-python-headless "
            "(or use --flow horn_schunck)"
        ) from None
    return cv2


def _grey(frame: np.ndarray | torch.Tensor) -> np.ndarray:
    """A grey float32 image (H, W) in [0, 255] from a grey (H, W) or RGB (H, W, 3) frame."""
    a = np.asarray(frame, dtype=np.float32)
    if a.ndim == 3 and a.shape[-1] == 3:
        a = a @ np.array([0.299, 0.587, 0.114], dtype=np.float32)  # ITU-R BT.601, as cv2.COLOR_RGB2GRAY
    elif a.ndim == 3 and a.shape[-1] == 1:
        a = a[..., 0]
    if a.ndim != 2:
        raise ValueError(f"expected a frame of shape (H, W) or (H, W, 3), got {a.shape}")
    return a


def _check_pair(prev: np.ndarray, nxt: np.ndarray) -> None:
    if prev.shape != nxt.shape:
        raise UserError(f"flow needs two frames of the same size, got {prev.shape} and {nxt.shape}: resize them")


def farneback(prev: np.ndarray, next: np.ndarray) -> np.ndarray:
    """Farneback flow prev→next (OpenCV, parameters :data:`FARNEBACK_PARAMS` on grey frames), (2, H, W)."""
    cv2 = import_cv2()
    a, b = _grey(prev), _grey(next)
    _check_pair(a, b)
    a8 = np.clip(np.rint(a), 0, 255).astype(np.uint8)
    b8 = np.clip(np.rint(b), 0, 255).astype(np.uint8)
    flow = cv2.calcOpticalFlowFarneback(a8, b8, None, **FARNEBACK_PARAMS)
    return np.ascontiguousarray(flow.transpose(2, 0, 1), dtype=np.float32)


_HS_AVERAGE = torch.tensor([[1 / 12, 1 / 6, 1 / 12], [1 / 6, 0.0, 1 / 6], [1 / 12, 1 / 6, 1 / 12]])
_DX = torch.tensor([[0.0, 0.0, 0.0], [-0.5, 0.0, 0.5], [0.0, 0.0, 0.0]])


def _filter(x: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Per-channel 3×3 filter of (1, C, H, W) with replicated borders."""
    c = x.shape[1]
    weight = kernel.to(x).expand(c, 1, 3, 3)
    return F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), weight, groups=c)


def _warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``image`` (1, 1, H, W) sampled at x + flow(x) (bilinear, borders replicated)."""
    _, _, h, w = image.shape
    ys, xs = torch.meshgrid(torch.arange(h, dtype=image.dtype), torch.arange(w, dtype=image.dtype), indexing="ij")
    gx = (xs + flow[0, 0]) * (2 / max(w - 1, 1)) - 1
    gy = (ys + flow[0, 1]) * (2 / max(h - 1, 1)) - 1
    grid = torch.stack([gx, gy], dim=-1)[None]
    return F.grid_sample(image, grid, mode="bilinear", padding_mode="border", align_corners=True)


def horn_schunck(
    prev: np.ndarray, next: np.ndarray, *, alpha: float = 0.05, iterations: int = 100, levels: int = 3
) -> np.ndarray:
    """Horn–Schunck flow prev→next (Horn & Schunck, 1981), coarse-to-fine with warping, (2, H, W).

    A dependency-free fallback to Farneback. Intensities are scaled to [0, 1]; ``alpha`` weighs the
    smoothness term, ``iterations`` Jacobi updates run per pyramid level (``levels`` levels, factor 2).
    """
    a, b = _grey(prev), _grey(next)
    _check_pair(a, b)
    pyramid = [(torch.from_numpy(a / 255.0)[None, None], torch.from_numpy(b / 255.0)[None, None])]
    for _ in range(levels - 1):
        i0, i1 = pyramid[-1]
        if min(i0.shape[-2:]) < 16:
            break
        pyramid.append((F.avg_pool2d(i0, 2), F.avg_pool2d(i1, 2)))
    flow = torch.zeros(1, 2, *pyramid[-1][0].shape[-2:], dtype=torch.float32)
    alpha2 = alpha * alpha
    for i0, i1 in reversed(pyramid):
        if flow.shape[-2:] != i0.shape[-2:]:
            scale = torch.tensor([i0.shape[-1] / flow.shape[-1], i0.shape[-2] / flow.shape[-2]]).view(1, 2, 1, 1)
            flow = F.interpolate(flow, size=i0.shape[-2:], mode="bilinear", align_corners=False) * scale
        warped = _warp(i1, flow)
        mean = (i0 + warped) / 2
        ix, iy = _filter(mean, _DX), _filter(mean, _DX.T)
        it = warped - i0
        grad = torch.cat([ix, iy], dim=1)
        denom = alpha2 + ix * ix + iy * iy
        base = flow.clone()
        for _ in range(iterations):
            avg = _filter(flow, _HS_AVERAGE)
            residual = (grad * (avg - base)).sum(1, keepdim=True) + it
            flow = avg - grad * residual / denom
    return flow[0].numpy().astype(np.float32)


FLOW_METHODS: dict[str, Callable[[np.ndarray, np.ndarray], np.ndarray]] = {
    "farneback": farneback,
    "horn_schunck": horn_schunck,
}
#: Methods that need a checkpoint file (``flow_estimator(..., weights=)``).
WEIGHTED_FLOW_METHODS = ("raft",)
_RAFT_MIN_SIDE = 128  # torchvision's RAFT needs feature maps of >= 16 cells at stride 8


class RaftFlow:
    """RAFT (Teed & Deng, ECCV 2020), the flow of the official pipeline, as torchvision builds it, with weights
    from a local file in torchvision's layout (e.g. ``raft_large_C_T_SKHT_V2-ff5fadd5.pth``); never downloads.

    ``size`` 'large' or 'small', ``iterations`` the recurrent updates (12, RAFT's default). Frames are padded
    (edge values) to a multiple of 8 and to at least 128 pixels, RAFT's smallest input, and every pair of a
    video is estimated in batches of ``batch_size``.
    """

    name = "raft"

    def __init__(
        self,
        weights: str | os.PathLike,
        *,
        size: str = "large",
        iterations: int = 12,
        device: str | torch.device = "cpu",
        batch_size: int = 4,
    ) -> None:
        try:
            from torchvision.models import optical_flow
        except ImportError as exc:
            raise UserError("RAFT flow needs torchvision: pip install torchvision (or use --flow farneback)") from exc
        if size not in ("large", "small"):
            raise UserError(f"RAFT size must be large or small, got {size!r}")
        if iterations < 1 or batch_size < 1:
            raise UserError("RAFT iterations and batch size must be >= 1")
        path = require_path(weights, "RAFT checkpoint (--raft-weights)", kind="file")
        model = (optical_flow.raft_large if size == "large" else optical_flow.raft_small)(weights=None)
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # any unreadable file gets the same one-line error
            raise UserError(f"{path} is not a readable PyTorch checkpoint ({type(exc).__name__})") from None
        state = state.get("state_dict", state.get("model", state)) if isinstance(state, dict) else state
        if not isinstance(state, dict):
            raise UserError(f"{path} holds no state dict: give torchvision's RAFT weights file")
        state = {k.removeprefix("module."): v for k, v in state.items()}
        try:
            model.load_state_dict(state)
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[0][:160]
            raise UserError(f"{path} does not fit torchvision's raft_{size} ({first}): check --raft-size") from None
        self.model = model.eval().to(device)
        self.device, self.iterations, self.batch_size = torch.device(device), iterations, batch_size

    def __call__(self, prev: np.ndarray, next: np.ndarray) -> np.ndarray:
        return self.pairs([prev], [next])[0]

    @torch.no_grad()
    def pairs(self, prevs: Sequence[np.ndarray], nexts: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Flow of each (prev, next) pair, all of one size: a list of (2, H, W) float32 arrays."""
        out = []
        for start in range(0, len(prevs), self.batch_size):
            a = self._batch(prevs[start : start + self.batch_size])
            b = self._batch(nexts[start : start + self.batch_size])
            h, w = a.shape[-2:]
            pad = (0, max(_RAFT_MIN_SIDE, w + -w % 8) - w, 0, max(_RAFT_MIN_SIDE, h + -h % 8) - h)
            flows = self.model(F.pad(a, pad, mode="replicate"), F.pad(b, pad, mode="replicate"), self.iterations)
            out += list(flows[-1][..., :h, :w].float().cpu().numpy())
        return out

    def _batch(self, frames: Sequence[np.ndarray]) -> torch.Tensor:
        """RGB frames (H, W, 3) uint8, or grey (H, W), as RAFT's input: (N, 3, H, W) in [-1, 1]."""
        x = torch.as_tensor(np.stack([np.asarray(f) for f in frames]), dtype=torch.float32)
        x = x[..., None].expand(*x.shape, 3) if x.ndim == 3 else x[..., :3]
        return (x.permute(0, 3, 1, 2) / 127.5 - 1.0).to(self.device)


def flow_estimator(
    method: str, *, weights: str | os.PathLike | None = None, size: str = "large", device: str = "cpu"
) -> str | RaftFlow:
    """``method`` as :func:`estimate_video_flow` takes it: a name of ``FLOW_METHODS``, or a :class:`RaftFlow`
    built from ``weights`` for ``'raft'``."""
    if method == "raft":
        if weights is None:
            raise UserError("--flow raft needs --raft-weights: a local torchvision RAFT checkpoint (.pth)")
        return RaftFlow(weights, size=size, device=device)
    if weights is not None:
        raise UserError(f"--raft-weights applies to --flow raft only, not {method}")
    return method


def check_flow_method(method: str | RaftFlow) -> None:
    """A ``UserError`` unless ``method`` is a name of ``FLOW_METHODS`` or a :class:`RaftFlow`."""
    if not isinstance(method, RaftFlow) and method not in FLOW_METHODS:
        names = ", ".join([*FLOW_METHODS, *WEIGHTED_FLOW_METHODS])
        raise UserError(f"unknown flow method {method!r}: choose one of {names}")


def estimate_video_flow(frames: Sequence[np.ndarray], method: str | RaftFlow = "farneback") -> list[np.ndarray]:
    """One flow per frame: t→t+1 for every frame but the last, which reuses (F−1 → F); zeros for one frame.

    ``method``: a name of ``FLOW_METHODS`` or a :class:`RaftFlow` (see :func:`flow_estimator`)."""
    check_flow_method(method)
    if not frames:
        return []
    if isinstance(method, RaftFlow):
        flows = method.pairs(frames[:-1], frames[1:])
    else:
        estimate = FLOW_METHODS[method]
        flows = [estimate(frames[i], frames[i + 1]) for i in range(len(frames) - 1)]
    if flows:
        flows.append(flows[-1].copy())
    else:
        flows.append(np.zeros((2, *_grey(frames[0]).shape), dtype=np.float32))
    return flows


def _colour_wheel() -> np.ndarray:
    """The 55-colour Middlebury wheel (red→yellow→green→cyan→blue→magenta→red), float (55, 3) in [0, 255]."""
    segments = [
        (15, 0, 1, True),
        (6, 1, 0, False),
        (4, 1, 2, True),
        (11, 2, 1, False),
        (13, 2, 0, True),
        (6, 0, 2, False),
    ]
    rows = []
    for n, full, ramp, rising in segments:
        seg = np.zeros((n, 3))
        seg[:, full] = 255
        steps = np.floor(255 * np.arange(n) / n)
        seg[:, ramp] = steps if rising else 255 - steps
        rows.append(seg)
    return np.concatenate(rows)


COLOUR_WHEEL = _colour_wheel()


def flow_to_rgb(flow: np.ndarray | torch.Tensor) -> np.ndarray:
    """The flow (2, H, W) as a uint8 (H, W, 3) colour-wheel image, normalised by its maximum magnitude.

    Hue is the direction and saturation the relative magnitude; zero flow is white. Follows the
    convention of RAFT's ``flow_viz`` and ``torchvision.utils.flow_to_image``.
    """
    f = np.asarray(flow, dtype=np.float32)
    if f.ndim != 3 or f.shape[0] != 2:
        raise ValueError(f"expected a flow of shape (2, H, W), got {f.shape}")
    norm = np.sqrt((f * f).sum(0))
    f = f / (norm.max() + np.finfo(np.float32).eps)
    norm = np.sqrt((f * f).sum(0))
    n = len(COLOUR_WHEEL)
    angle = np.arctan2(-f[1], -f[0]) / np.pi
    fk = (angle + 1) / 2 * (n - 1)
    k0 = np.floor(fk).astype(np.int64)
    k1 = np.where(k0 + 1 == n, 0, k0 + 1)
    frac = (fk - k0)[..., None]
    col = ((1 - frac) * COLOUR_WHEEL[k0] + frac * COLOUR_WHEEL[k1]) / 255.0
    col = 1 - norm[..., None] * (1 - col)
    return np.floor(255 * col).astype(np.uint8)


def endpoint_error(flow: np.ndarray, reference: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean end-point error ‖flow − reference‖ in pixels, over ``mask`` (H, W) when given."""
    epe = np.sqrt(((np.asarray(flow) - np.asarray(reference)) ** 2).sum(0))
    return float(epe[mask].mean() if mask is not None else epe.mean())


def video_folders(root: str | os.PathLike) -> list[Path]:
    """The folders under ``root`` (itself included) that hold image files directly: one video each, sorted."""
    root = Path(root)
    return sorted({p.parent for p in root.rglob("*") if p.is_file() and is_image_file(p)})


def write_flow_folders(
    frames: str | os.PathLike,
    out: str | os.PathLike,
    method: str | RaftFlow = "farneback",
    on_video: Callable[[int, int, Path], None] | None = None,
) -> dict[str, int]:
    """Flow t→t+1 of every video folder under ``frames`` (or of ``frames`` itself), rendered as colour-wheel
    PNGs into the same relative folders under ``out`` with the frames' names (the ``allframes_flow`` layout).

    ``on_video(done, total, folder)`` is called after each video (progress). Returns the counts.
    """
    check_flow_method(method)  # before any file is read
    root = require_path(frames, "--frames (a folder of video frames)", kind="dir")
    videos = video_folders(root)
    if not videos:
        raise UserError(f"{root} holds no image files: point --frames at a video folder or a tree of them")
    out = Path(out)
    images = 0
    for done, folder in enumerate(videos, start=1):
        files = sorted(p for p in folder.iterdir() if p.is_file() and is_image_file(p))
        arrays = [np.asarray(open_image(p)) for p in files]
        sizes = {a.shape for a in arrays}
        if len(sizes) > 1:
            raise UserError(f"the frames of {folder} differ in size ({sorted(sizes)}): one video per folder")
        dest = out / folder.relative_to(root)
        dest.mkdir(parents=True, exist_ok=True)
        for path, flow in zip(files, estimate_video_flow(arrays, method), strict=True):
            Image.fromarray(flow_to_rgb(flow)).save(dest / f"{path.stem}.png", compress_level=1)
        images += len(files)
        if on_video is not None:
            on_video(done, len(videos), folder)
    return {"videos": len(videos), "images": images}

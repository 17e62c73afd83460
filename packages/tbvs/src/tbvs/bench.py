"""What ``tbvs-bench`` times.

1. Optical flow: frames/s of Farneback (OpenCV) and Horn-Schunck (pure torch) at the paper's input size on a
   textured frame pair with a 3 px shift (the paper used RAFT flow, computed offline).
2. The paper-size model (dilated ResNet-101 + ResNet-34 os16 + a randomly initialised BERT-base built locally
   from ``transformers.BertConfig()``: nothing downloads; the tiny text encoder at 768 wide without
   transformers) at ``size`` x ``size``, clip 3: clips/s of one training step (forward, the 4-term loss with the
   full vision-flow affinity, backward, Adam) and of inference (``predict``, no alignment maps).
3. The share of the training step spent in each module's **forward** (forward hooks around the RGB backbone,
   flow backbone, text encoder, video transformer, the three LGFF blocks, the head and the alignment heads;
   the rest of the forward is ASPP, coordinates and projections), in the loss, and in backward + optimizer
   (the remainder).
4. Training it/s of the demo network (each variant ``tbvs-repro`` trains) on random batches of 8 clips at 96 px
   (data loading excluded; the loader adds little at this size).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from shared.device import AmpScaler, autocast
from shared.errors import UserError
from tbvs.config import build_config
from tbvs.engine import Segmenter, build_model
from tbvs.flow import farneback, horn_schunck
from tbvs.losses import TBVSLoss
from tbvs.models import ARCHS, TBVSNet
from tbvs.synthetic import VOCABULARY
from tbvs.text import TinyTextEncoder

#: Module groups whose forward time is measured (attribute paths in the Segmenter).
MODULES: dict[str, tuple[str, ...]] = {
    "RGB backbone": ("net.rgb_backbone",),
    "flow backbone": ("net.flow_backbone",),
    "text encoder": ("text",),
    "video transformer": ("net.transformer",),
    "LGFF fusion": ("net.up_16_16", "net.up_16_8", "net.up_8_4"),
    "decoder head": ("net.head",),
    "alignment heads": ("net.fuse_rgb", "net.fuse_flow", "net.alignment"),
}
DEMO_VARIANTS = ("B+M+T+L+A", "B+M+T+L", "B+T+L+A")
TOKENS = 20


class RandomBert(nn.Module):
    """BERT-base (``transformers.BertConfig()`` defaults) with random weights, last hidden states; embeddings
    frozen as in the release. Built locally: the benchmark needs BERT's cost, not its weights."""

    def __init__(self) -> None:
        super().__init__()
        import transformers

        self.bert = transformers.BertModel(transformers.BertConfig(), add_pooling_layer=False)
        self.bert.embeddings.requires_grad_(False)
        self.dim = self.bert.config.hidden_size

    def forward(self, ids: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        return self.bert(input_ids=ids, attention_mask=mask).last_hidden_state


def paper_text_encoder(text: str) -> tuple[nn.Module, str]:
    """(encoder, description): random BERT-base, or the tiny encoder at 768 wide if transformers is missing."""
    if text == "bert":
        try:
            return RandomBert(), "BERT-base (random init)"
        except ImportError:
            pass
    return TinyTextEncoder(30522, 768, layers=1, heads=4, max_tokens=TOKENS), "tiny text encoder (768 wide)"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _median_seconds(device: torch.device, steps: int, work: Callable[[], None], warmup: int = 1) -> float:
    for _ in range(warmup):
        work()
    times = []
    for _ in range(steps):
        _sync(device)
        started = time.perf_counter()
        work()
        _sync(device)
        times.append(time.perf_counter() - started)
    return sorted(times)[len(times) // 2]


def flow_frames_per_s(size: int, repeats: int = 3) -> dict[str, float]:
    """Frames/s of each flow estimator on a size x size textured pair shifted by 3 px (CPU)."""
    rng = np.random.default_rng(0)
    noise = rng.uniform(0, 255, (size // 4 + 2, size // 4 + 2)).astype(np.float32)
    texture = np.kron(noise, np.ones((4, 4), np.float32))[: size + 3, : size + 3]
    frame0 = np.repeat(texture[:size, :size, None], 3, axis=2).astype(np.uint8)
    frame1 = np.repeat(texture[3 : size + 3, :size, None], 3, axis=2).astype(np.uint8)
    report = {}
    for name, method in (("farneback", farneback), ("horn_schunck", horn_schunck)):
        try:
            seconds = _median_seconds(torch.device("cpu"), repeats, lambda m=method: m(frame0, frame1))
        except UserError:  # OpenCV missing
            continue
        report[name] = 1.0 / seconds
    return report


def _inputs(batch: int, size: int, vocab: int, device: torch.device, clip: int = 3) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(1, vocab, (batch, TOKENS), generator=g)
    attn = torch.ones(batch, TOKENS, dtype=torch.long)
    attn[:, TOKENS // 2 :] = 0  # half padding, as short sentences have
    ids = ids * attn
    mask = torch.zeros(batch, 1, size, size)
    mask[..., size // 4 : size // 2, size // 3 : size // 2 + size // 6] = 1
    values = {
        "images": torch.randn(batch, clip, 3, size, size, generator=g),
        "flows": torch.randn(batch, clip, 3, size, size, generator=g),
        "ids": ids,
        "attn": attn,
        "mask": mask,
    }
    return {k: v.to(device) for k, v in values.items()}


class _ModuleTimer:
    """Forward seconds of module groups (pre-/post-forward hooks; synchronised on CUDA)."""

    def __init__(self, model: nn.Module, device: torch.device) -> None:
        self.device, self.seconds, self.handles, self.active = device, {}, [], False
        for group, paths in MODULES.items():
            for path in paths:
                module = model
                for part in path.split("."):
                    module = getattr(module, part, None)
                    if module is None:
                        break
                if module is not None:
                    self._attach(group, module)

    def _attach(self, group: str, module: nn.Module) -> None:
        starts: list[float] = []

        def pre(_module, _inputs) -> None:
            if self.active:
                _sync(self.device)
                starts.append(time.perf_counter())

        def post(_module, _inputs, _output) -> None:
            if self.active and starts:
                _sync(self.device)
                self.seconds[group] = self.seconds.get(group, 0.0) + time.perf_counter() - starts.pop()

        self.handles += [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def paper_model(
    device: torch.device, *, size: int = 320, batch_size: int = 1, steps: int = 2, text: str = "bert", amp: bool = False
) -> dict[str, Any]:
    """Clips/s of training and inference of the paper-size model and the module shares of the training step."""
    encoder, text_name = paper_text_encoder(text)
    net = TBVSNet(ARCHS["paper"].replace(input_size=size, text_dim=encoder.dim))
    model = Segmenter(encoder, net).to(device)
    vocab = encoder.bert.config.vocab_size if isinstance(encoder, RandomBert) else 30522
    batch = _inputs(batch_size, size, vocab, device)
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=2e-5)
    scaler, criterion = AmpScaler(device, amp), TBVSLoss()
    timer = _ModuleTimer(model, device)
    phases = {"forward": 0.0, "loss": 0.0, "backward + optimizer": 0.0}

    def train_step() -> None:
        model.train()
        _sync(device)
        t0 = time.perf_counter()
        with autocast(device, amp):
            output = model(batch["images"], batch["flows"], batch["ids"], batch["attn"])
        _sync(device)
        t1 = time.perf_counter()
        losses = criterion(type(output)(*(t.float() if torch.is_tensor(t) and t.is_floating_point() else t
                                          for t in output)), batch["mask"])  # fmt: skip
        _sync(device)
        t2 = time.perf_counter()
        optimizer.zero_grad(set_to_none=True)
        scaler(losses["total"], optimizer)
        _sync(device)
        t3 = time.perf_counter()
        if timer.active:
            for key, seconds in zip(phases, (t1 - t0, t2 - t1, t3 - t2), strict=True):
                phases[key] += seconds

    train_step()  # warm-up, not profiled
    timer.active = True
    train_seconds = _median_seconds(device, steps, train_step, warmup=0)
    timer.active = False
    timer.remove()

    def infer() -> None:
        model.eval()
        with torch.no_grad(), autocast(device, amp):
            tokens = model.text(batch["ids"], batch["attn"])
            model.net.predict(batch["images"], batch["flows"], tokens, batch["attn"])

    infer_seconds = _median_seconds(device, steps, infer)
    total = sum(phases.values())
    shares = {group: timer.seconds.get(group, 0.0) / total for group in MODULES}
    shares["other forward (ASPP, coordinates, projections)"] = (phases["forward"] - sum(timer.seconds.values())) / total
    shares["loss (4 BCE terms)"] = phases["loss"] / total
    shares["backward + optimizer"] = phases["backward + optimizer"] / total
    params = sum(p.numel() for p in model.parameters())
    return {
        "text_encoder": text_name,
        "parameters_m": round(params / 1e6, 2),
        "train_clips_per_s": batch_size / train_seconds,
        "train_step_s": train_seconds,
        "infer_clips_per_s": batch_size / infer_seconds,
        "infer_s": infer_seconds,
        "shares": shares,
    }


def demo_iterations_per_s(device: torch.device, steps: int = 20) -> dict[str, float]:
    """Training it/s (batch 8 clips at 96 px, Adam) of the demo network, per variant, on random batches."""
    report = {}
    for variant in DEMO_VARIANTS:
        config = build_config("demo", variant=variant)
        model, _ = build_model(config, list(VOCABULARY))
        model.to(device)
        batch = _inputs(config.batch_size, config.input_size, len(VOCABULARY) + 2, device)
        batch["ids"] = batch["ids"][:, : config.max_tokens]
        batch["attn"] = batch["attn"][:, : config.max_tokens]
        optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
        criterion = TBVSLoss()

        def step(model=model, batch=batch, optimizer=optimizer, criterion=criterion) -> None:
            model.train()
            output = model(batch["images"], batch["flows"], batch["ids"], batch["attn"])
            optimizer.zero_grad(set_to_none=True)
            criterion(output, batch["mask"])["total"].backward()
            optimizer.step()

        seconds = _median_seconds(device, steps, step, warmup=2)
        report[variant] = 1.0 / seconds
    return report


def benchmark(
    device: torch.device,
    *,
    size: int = 320,
    batch_size: int = 1,
    steps: int = 2,
    demo_steps: int = 20,
    text: str = "bert",
    amp: bool = False,
) -> dict[str, Any]:
    """Every measurement of the module docstring; ``size`` is the flow and paper-model input side."""
    if size < 32 or size % 16 or batch_size < 1 or steps < 1 or demo_steps < 1:
        raise UserError("need --size a multiple of 16 (>= 32), --batch-size, --steps and --demo-steps >= 1")
    if text not in ("bert", "tiny"):
        raise UserError(f"unknown --text {text!r}: choose bert or tiny")
    report: dict[str, Any] = {"device": str(device), "threads": torch.get_num_threads(), "size": size}
    report |= {"batch": batch_size, "clip": 3, "amp": amp}
    report["flow_frames_per_s"] = flow_frames_per_s(size)
    report["paper_model"] = paper_model(device, size=size, batch_size=batch_size, steps=steps, text=text, amp=amp)
    report["demo_train_it_per_s"] = demo_iterations_per_s(device, demo_steps)
    return report


def format_result(report: dict[str, Any]) -> str:
    """The report as a few lines of text."""
    paper = report["paper_model"]
    lines = [f"tbvs-bench on {report['device']}, {report['threads']} thread(s){' AMP' if report['amp'] else ''}"]
    flows = ", ".join(f"{k} {v:.1f}" for k, v in report["flow_frames_per_s"].items())
    lines.append(f"  flow at {report['size']}x{report['size']} [frames/s]: {flows}")
    lines.append(
        f"  paper-size model ({paper['parameters_m']:.1f} M parameters, {paper['text_encoder']}) at "
        f"{report['size']}px, clip 3, batch {report['batch']}: training {paper['train_clips_per_s']:.3f} clips/s "
        f"({paper['train_step_s']:.2f} s/step), inference {paper['infer_clips_per_s']:.3f} clips/s"
    )
    lines.append("  share of the training step:")
    lines += [f"    {name:<48} {share * 100:5.1f}%" for name, share in paper["shares"].items()]
    demo = ", ".join(f"{k} {v:.1f}" for k, v in report["demo_train_it_per_s"].items())
    lines.append(f"  demo network training [it/s, batch 8 at 96px, random batches]: {demo}")
    return "\n".join(lines)

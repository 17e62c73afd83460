"""What ``promptdfd-bench`` times: the demo generator's batched nucleus sampling (tokens/s) and one KD step of
the demo student (samples/s, forward and backward). Random weights: the cost does not depend on them."""

from __future__ import annotations

import time

import torch

from .losses import kd_loss
from .models import build_classifier, build_generator
from .text import BOS


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def run(device: torch.device, *, batch_size: int = 256, repeats: int = 5, vocab: int = 1200) -> dict:
    """Generation of ``batch_size`` continuations (prompt 4 tokens, 12 new) and one KD step on ``batch_size``
    texts of 16 tokens, each the mean of ``repeats`` timed calls."""
    torch.manual_seed(0)
    generator = build_generator("demo", vocab, 32).to(device).eval()
    prompts = torch.full((batch_size, 4), BOS, dtype=torch.long, device=device)
    new_tokens = 12
    rng = torch.Generator(device=device).manual_seed(0)
    gen_s = _timed(lambda: generator.generate(prompts, max_new_tokens=new_tokens, generator=rng), repeats)
    student = build_classifier("demo-student", vocab, 4, 24).to(device).train()
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3)
    ids = torch.randint(5, vocab, (batch_size, 16), device=device)
    mask = torch.ones_like(ids, dtype=torch.bool)
    target = torch.randn(batch_size, 4, device=device)

    def kd_step() -> None:
        loss = kd_loss(student(ids, mask), target, 2.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    kd_s = _timed(kd_step, repeats)
    return {
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "generation_tokens_per_s": batch_size * new_tokens / gen_s,
        "kd_samples_per_s": batch_size / kd_s,
    }


def format_result(result: dict) -> str:
    """One line per figure."""
    return (
        f"{result['device']}, {result['threads']} thread(s), batch {result['batch_size']}\n"
        f"generation: {result['generation_tokens_per_s']:,.0f} tokens/s\n"
        f"distillation: {result['kd_samples_per_s']:,.0f} samples/s"
    )

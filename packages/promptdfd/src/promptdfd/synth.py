"""Synthetic training sets for data-free distillation, one class per way of making them.

Every synthesiser returns :class:`SynthText` rows through ``synthesize(n, rng)``, so the methods compared in
Ma et al., PromptDFD (IJCAI 2022) differ only here and share one distillation recipe:

- :class:`RandomTokenSynth`: uniform tokens of the teacher's vocabulary (the weakest data-free baseline);
- :class:`CorpusSynth`: real but unrelated text (an out-of-domain corpus);
- :class:`LMSynth` with no prompt: the generator's language prior without topic control;
- :class:`LMSynth` with a hand-written prompt per class (the manual-prompt ablation);
- :class:`ReinforcedPromptSynth`: ``[topic prompt] + [content]``, the prompt sampled from the reinforced topic
  prompter for a class, the content the frozen generator's continuation (the paper's method).

The class a text was made for (``target_class``) is bookkeeping: the student learns from the teacher's output
on the text, never from it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from .models import CausalLM, GRUPrompter
from .text import WordTokenizer


@dataclass(frozen=True)
class SynthText:
    """One synthetic text; ``target_class`` is -1 where the method targets no class."""

    text: str
    target_class: int = -1
    prompt: str = ""


@dataclass
class Continuation:
    """Prompts continued by the generator: the texts, and the generated tokens with their mask."""

    texts: list[str]
    prompts: list[str]
    content_ids: torch.Tensor  # [B, L] generated token ids (pad after EOS)
    content_mask: torch.Tensor  # [B, L] True for generated tokens before EOS
    full_ids: torch.Tensor  # [B, P + L]


def balanced_classes(n: int, n_classes: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` class indices, as equal per class as ``n`` allows, in random order."""
    return rng.permutation(np.arange(n) % n_classes)


def continue_prompts(
    generator: CausalLM,
    tokenizer: WordTokenizer,
    prompts: torch.Tensor,
    *,
    content_len: int,
    top_p: float,
    temperature: float,
    rng: torch.Generator,
) -> Continuation:
    """Sample ``content_len`` tokens after each prompt row (``[BOS] + prompt tokens``, same length per batch)
    and detokenise prompt and content into text (the text bridge to the teacher's tokenizer)."""
    full = generator.generate(prompts, max_new_tokens=content_len, top_p=top_p, temperature=temperature, generator=rng)
    content = full[:, prompts.shape[1] :]
    mask = ~tokenizer.special_mask(content)
    # Everything up to the first special token (EOS, then padding) is content.
    mask = mask & (torch.cumsum(~mask, dim=1) == 0)
    full_rows, prompt_rows = full.tolist(), prompts.tolist()
    texts = [tokenizer.decode(row) for row in full_rows]
    prompt_texts = [tokenizer.decode(row) for row in prompt_rows]
    return Continuation(texts, prompt_texts, content, mask, full)


class RandomTokenSynth:
    """Texts of ``length`` tokens drawn uniformly from the teacher's vocabulary (special tokens excluded)."""

    def __init__(self, tokenizer: WordTokenizer, length: int) -> None:
        self.words = np.asarray(tokenizer.word_list())
        self.length = length

    def synthesize(self, n: int, rng: np.random.Generator) -> list[SynthText]:
        picks = rng.integers(0, len(self.words), size=(n, self.length))
        return [SynthText(" ".join(row)) for row in self.words[picks]]


class CorpusSynth:
    """``n`` texts drawn without replacement (with, if the corpus is smaller) from an unrelated corpus."""

    def __init__(self, texts: Sequence[str]) -> None:
        if not texts:
            raise ValueError("the out-of-domain corpus is empty")
        self.texts = list(texts)

    def synthesize(self, n: int, rng: np.random.Generator) -> list[SynthText]:
        picks = rng.choice(len(self.texts), size=n, replace=n > len(self.texts))
        return [SynthText(self.texts[i]) for i in picks]


class LMSynth:
    """The frozen generator continuing ``[BOS]`` (``class_prompts`` None: unprompted) or ``[BOS] + the hand-written
    prompt of a class`` (one prompt per class, classes balanced)."""

    def __init__(
        self,
        generator: CausalLM,
        tokenizer: WordTokenizer,
        *,
        content_len: int,
        top_p: float,
        temperature: float,
        class_prompts: Sequence[str] | None = None,
        batch_size: int = 256,
    ) -> None:
        self.generator, self.tokenizer = generator, tokenizer
        self.options = dict(content_len=content_len, top_p=top_p, temperature=temperature)
        self.class_prompts = None if class_prompts is None else list(class_prompts)
        self.batch_size = batch_size

    def synthesize(self, n: int, rng: np.random.Generator) -> list[SynthText]:
        torch_rng = torch.Generator(device=_device(self.generator)).manual_seed(int(rng.integers(2**62)))
        if self.class_prompts is None:
            groups = [(-1, [self.tokenizer.bos_id], n)]
        else:
            classes = balanced_classes(n, len(self.class_prompts), rng)
            groups = [
                (c, [self.tokenizer.bos_id, *self.tokenizer.encode(prompt)], int(np.sum(classes == c)))
                for c, prompt in enumerate(self.class_prompts)
            ]
        rows: list[SynthText] = []
        for c, prompt, count in groups:
            for start in range(0, count, self.batch_size):
                size = min(self.batch_size, count - start)
                prompts = torch.tensor([prompt] * size, device=_device(self.generator))
                out = continue_prompts(self.generator, self.tokenizer, prompts, rng=torch_rng, **self.options)
                rows += [SynthText(t, c, p) for t, p in zip(out.texts, out.prompts, strict=True)]
        order = rng.permutation(len(rows))
        return [rows[i] for i in order]


class ReinforcedPromptSynth:
    """``[topic prompt] + [content]``: the prompter samples K tokens for a class, the generator continues them."""

    def __init__(
        self,
        prompter: GRUPrompter,
        generator: CausalLM,
        tokenizer: WordTokenizer,
        *,
        n_classes: int,
        content_len: int,
        top_p: float,
        temperature: float,
        batch_size: int = 256,
    ) -> None:
        self.prompter, self.generator, self.tokenizer = prompter, generator, tokenizer
        self.n_classes = n_classes
        self.options = dict(content_len=content_len, top_p=top_p, temperature=temperature)
        self.batch_size = batch_size

    def sample(self, classes: torch.Tensor, rng: torch.Generator):
        """Prompts for ``classes`` and their continuations: ``(PromptBatch, Continuation)``."""
        batch = self.prompter.sample(classes, generator=rng)
        bos = torch.full((len(classes), 1), self.tokenizer.bos_id, dtype=torch.long, device=batch.ids.device)
        out = continue_prompts(
            self.generator, self.tokenizer, torch.cat([bos, batch.ids], dim=1), rng=rng, **self.options
        )
        return batch, out

    def synthesize(self, n: int, rng: np.random.Generator) -> list[SynthText]:
        torch_rng = torch.Generator(device=_device(self.generator)).manual_seed(int(rng.integers(2**62)))
        classes = torch.from_numpy(balanced_classes(n, self.n_classes, rng))
        rows: list[SynthText] = []
        for start in range(0, n, self.batch_size):
            chunk = classes[start : start + self.batch_size].to(_device(self.generator))
            _, out = self.sample(chunk, torch_rng)
            rows += [SynthText(t, int(c), p) for t, c, p in zip(out.texts, chunk.tolist(), out.prompts, strict=True)]
        return rows


def _device(module: torch.nn.Module) -> torch.device:
    return next(module.parameters()).device

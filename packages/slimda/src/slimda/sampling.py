"""Architecture sampling of the model bank: the sandwich rule of universally slimmable networks (unverified for
SlimDA).

Each training step draws its architectures from a generator seeded by ``(seed, step)``: the draw is a pure
function of the step, so a resumed run samples exactly what the uninterrupted run would have.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from shared.errors import UserError
from slimda.models import Arch

SPACES = ("uniform", "stagewise")


class ArchSampler:
    """n architectures per step: the largest, the smallest and n − 2 random distinct ones (``sandwich``).

    ``space="uniform"`` draws one multiplier for every group from ``grid``; ``"stagewise"`` one per group.
    """

    def __init__(
        self, groups: int, grid: Sequence[float], n: int, space: str = "stagewise", sandwich: bool = True, seed: int = 0
    ) -> None:
        if space not in SPACES:
            raise UserError(f"unknown architecture space {space!r}: choose from {SPACES}")
        if n < 1 or (sandwich and n < 2):
            raise UserError(f"--archs-per-iter {n}: the sandwich rule needs at least 2 (largest and smallest)")
        self.groups, self.grid, self.n = groups, tuple(sorted(set(grid))), n
        self.space, self.sandwich, self.seed = space, sandwich, seed

    @property
    def largest(self) -> Arch:
        return Arch.uniform(self.grid[-1], self.groups)

    @property
    def smallest(self) -> Arch:
        return Arch.uniform(self.grid[0], self.groups)

    def space_size(self) -> int:
        return len(self.grid) ** (self.groups if self.space == "stagewise" else 1)

    def random(self, generator: torch.Generator) -> Arch:
        picks = self.groups if self.space == "stagewise" else 1
        index = torch.randint(len(self.grid), (picks,), generator=generator).tolist()
        widths = tuple(self.grid[i] for i in index)
        return Arch(widths if picks == self.groups else widths * self.groups)

    def sample(self, step: int) -> list[Arch]:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        chosen = [self.largest, self.smallest] if self.sandwich else []
        wanted = min(self.n, self.space_size())
        while len(chosen) < wanted:
            arch = self.random(generator)
            if arch not in chosen:
                chosen.append(arch)
        return chosen

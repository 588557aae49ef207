"""Synthetic tokens: the recipes' mock data, deterministic from a seed.

Sample ``i`` of step ``s`` is a function of ``(seed, s, i)`` alone, so any data-parallel
split of a global batch sees exactly the samples one process would see.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch

MicroBatch = tuple[torch.Tensor, torch.Tensor]


class SyntheticTokens:
    """Uniformly random token ids in ``[0, vocab)``.

    The global batch of a step holds ``micro_batch * ga * dp_size`` samples; DP rank ``r``
    takes samples ``[r*mbs*ga, (r+1)*mbs*ga)`` in GA micro-batches of ``micro_batch``.
    """

    def __init__(
        self,
        *,
        vocab: int,
        seq_len: int,
        micro_batch: int,
        ga: int,
        dp_rank: int = 0,
        dp_size: int = 1,
        seed: int = 0,
        start_step: int = 0,
    ):
        self.vocab, self.seq_len, self.micro_batch, self.ga = vocab, seq_len, micro_batch, ga
        self.dp_rank, self.dp_size, self.seed = dp_rank, dp_size, seed
        self.step = start_step

    def sample(self, step: int, index: int) -> torch.Tensor:
        """Sample ``index`` of the global batch of ``step``: ``seq_len + 1`` token ids."""
        # Reduced to the generator's 63 bits: the same seed as before for every seed below 2**24.
        gen = torch.Generator().manual_seed(((self.seed * 1_000_003 + step) * 1_000_033 + index) % (1 << 63))
        return torch.randint(0, self.vocab, (self.seq_len + 1,), generator=gen)

    def step_batches(self, step: int) -> list[MicroBatch]:
        per_rank = self.micro_batch * self.ga
        first = self.dp_rank * per_rank
        out = []
        for mb in range(self.ga):
            rows = torch.stack(
                [self.sample(step, first + mb * self.micro_batch + j) for j in range(self.micro_batch)]
            )
            out.append((rows[:, :-1].contiguous(), rows[:, 1:].contiguous()))
        return out

    def __iter__(self) -> Iterator[MicroBatch]:
        while True:
            yield from self.step_batches(self.step)
            self.step += 1

"""Fixed-length training samples cut from an indexed dataset, served as micro-batches.

The token stream is every document back to back (with ``--append-eod`` each ends with the
end-of-document token, so the model sees where documents end). Sample ``k`` of an epoch is the
``seq_len + 1`` tokens starting at token ``k * seq_len``: consecutive samples share one token,
as in Megatron's GPT dataset, so every token is a label exactly once per epoch.

Order: the global sample number ``g`` (counted over all data-parallel ranks) is sample
``perm_e[g mod n]`` of epoch ``e = g // n``, where ``n`` is the samples per epoch and
``perm_e`` a permutation drawn from ``(seed, e)`` (the identity with ``shuffle=False``). When an
epoch runs out the next one starts, with a new permutation.

Data parallelism: every step the ``dp_size`` ranks together consume ``micro_batch * dp_size``
consecutive global samples and rank ``r`` takes the ``r``-th run of ``micro_batch`` of them
(Megatron's pretraining sampler does the same). The position saved for resume is the global
count of consumed samples, the same on every rank, so a run can resume on another DP size.
"""

from __future__ import annotations

from typing import Any, Iterator

import numpy as np
import torch

from llmb.data.indexed import IndexedDataset
from llmb.errors import LlmbError


class TokenBatches:
    """An endless iterator of ``(tokens, labels)`` micro-batches from an indexed dataset.

    Both are int64 tensors of shape ``[micro_batch, seq_len]``; ``labels`` is ``tokens``
    shifted left by one token (the next-token targets). ``consumed_samples`` is the data
    position: save it with :meth:`state_dict`, give it back with :meth:`load_state_dict`.
    """

    def __init__(
        self,
        dataset: IndexedDataset,
        *,
        seq_len: int,
        micro_batch: int,
        seed: int = 0,
        shuffle: bool = True,
        dp_rank: int = 0,
        dp_size: int = 1,
        consumed_samples: int = 0,
    ):
        if seq_len < 1 or micro_batch < 1:
            raise LlmbError(f"seq_len ({seq_len}) and micro_batch ({micro_batch}) must be >= 1")
        if dp_size < 1 or not 0 <= dp_rank < dp_size:
            raise LlmbError(f"dp_rank {dp_rank} is not a rank of dp_size {dp_size}")
        self._tokens = dataset.tokens
        self.seq_len = seq_len
        self.micro_batch = micro_batch
        self.seed = seed
        self.shuffle = shuffle
        self.dp_rank = dp_rank
        self.dp_size = dp_size
        self.consumed_samples = int(consumed_samples)
        self.samples_per_epoch = (len(self._tokens) - 1) // seq_len
        if self.samples_per_epoch < 1:
            raise LlmbError(
                f"{dataset.prefix} has {len(self._tokens)} tokens, fewer than one sample of "
                f"seq_len + 1 = {seq_len + 1}"
            )
        self._perm_epoch: int | None = None
        self._perm: np.ndarray | None = None

    @property
    def epoch(self) -> int:
        """The epoch the next global sample belongs to (0-based)."""
        return self.consumed_samples // self.samples_per_epoch

    def _permutation(self, epoch: int) -> np.ndarray:
        if self._perm_epoch != epoch:
            # A fresh generator per epoch: the order of epoch e never depends on how far the
            # earlier epochs were read, which is what makes resume exact.
            rng = np.random.default_rng([self.seed, epoch])
            self._perm = rng.permutation(self.samples_per_epoch)
            self._perm_epoch = epoch
        return self._perm

    def sample(self, global_index: int) -> np.ndarray:
        """The ``seq_len + 1`` tokens of global sample ``global_index`` (a NumPy view)."""
        epoch, k = divmod(global_index, self.samples_per_epoch)
        if self.shuffle:
            k = int(self._permutation(epoch)[k])
        start = k * self.seq_len
        return self._tokens[start : start + self.seq_len + 1]

    def next_batch(self) -> tuple[torch.Tensor, torch.Tensor]:
        """This rank's next micro-batch; advances the position by one step of all DP ranks."""
        first = self.consumed_samples + self.dp_rank * self.micro_batch
        rows = np.stack([self.sample(g) for g in range(first, first + self.micro_batch)])
        self.consumed_samples += self.micro_batch * self.dp_size
        window = torch.from_numpy(rows.astype(np.int64))
        return window[:, :-1].contiguous(), window[:, 1:].contiguous()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        return self

    def __next__(self) -> tuple[torch.Tensor, torch.Tensor]:
        return self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        """The data position and the settings it is only meaningful with."""
        return {
            "consumed_samples": self.consumed_samples,
            "seed": self.seed,
            "shuffle": self.shuffle,
            "seq_len": self.seq_len,
            "samples_per_epoch": self.samples_per_epoch,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from a saved position; the dataset, seed and seq_len must be the same."""
        for key in ("seed", "shuffle", "seq_len", "samples_per_epoch"):
            if state[key] != getattr(self, key):
                raise LlmbError(
                    f"cannot resume the data stream: saved {key} {state[key]!r}, "
                    f"now {getattr(self, key)!r}"
                )
        self.consumed_samples = int(state["consumed_samples"])

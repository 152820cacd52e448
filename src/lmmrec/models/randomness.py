"""Random numbers that are a function of the model's seed and the batch (or the epoch): dropout
masks and samples that a resumed or data-parallel run draws exactly as an uninterrupted one.
"""

from __future__ import annotations

import hashlib

import torch

from lmmrec.data.sampling import Batch


class BatchRandom:
    """Random numbers (dropout masks, edge samples) drawn from a generator seeded by the model's
    seed and the batch's content.

    A loss is then a function of the model, the batch and the features: calling it twice gives
    the same value, nothing depends on other consumers of the global RNG, and a resumed run draws
    what an uninterrupted one would. The seed is drawn from the global RNG when the model is
    built (so a seeded build reproduces it); every shuffled batch draws fresh numbers.
    """

    def __init__(self) -> None:
        self.seed = int(torch.randint(0, 2**62, ()))

    def generator(self, batch: Batch, device: torch.device) -> torch.Generator:
        digest = hashlib.blake2b(digest_size=8)
        for index in (batch.users, batch.pos_items, batch.neg_items):
            digest.update(index.cpu().numpy().tobytes())
        return self._generator(int.from_bytes(digest.digest(), "little"), device)

    def epoch_generator(self, epoch: int, device: torch.device) -> torch.Generator:
        """A generator for per-epoch draws (graph pruning, neighbour urns): the same on every
        process of a data-parallel run, and again after a resume."""
        digest = hashlib.blake2b(f"epoch {epoch}".encode(), digest_size=8).digest()
        return self._generator(int.from_bytes(digest, "little"), device)

    def _generator(self, salt: int, device: torch.device) -> torch.Generator:
        return torch.Generator(device=device).manual_seed((self.seed ^ salt) % 2**63)


def dropout(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """Inverted dropout (``torch.nn.functional.dropout`` in training mode) drawing from
    ``generator`` (on ``x``'s device)."""
    if p <= 0:
        return x
    keep = torch.rand(x.shape, generator=generator, device=x.device) >= p
    return x * keep / (1 - p)

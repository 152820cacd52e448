"""Random numbers drawn as a function of the model's seed and the batch or epoch."""

from __future__ import annotations

import torch

from lmmrec.data.sampling import Batch
from lmmrec.models.randomness import BatchRandom, dropout


def test_epoch_generator_depends_on_seed_and_epoch_only() -> None:
    torch.manual_seed(0)
    first = BatchRandom()
    torch.manual_seed(0)
    second = BatchRandom()  # another process of a data-parallel run, or a resumed one
    device = torch.device("cpu")
    draw = torch.rand(4, generator=first.epoch_generator(3, device))
    assert torch.equal(draw, torch.rand(4, generator=second.epoch_generator(3, device)))
    assert not torch.equal(draw, torch.rand(4, generator=first.epoch_generator(4, device)))


def test_batch_random_depends_on_seed_and_batch_only() -> None:
    batch = Batch(torch.tensor([0, 1]), torch.tensor([2, 3]), torch.tensor([4, 5]))
    other = Batch(torch.tensor([1, 0]), torch.tensor([2, 3]), torch.tensor([4, 5]))
    torch.manual_seed(0)
    first = BatchRandom()
    torch.manual_seed(0)
    second = BatchRandom()
    device = torch.device("cpu")
    draw = torch.rand(4, generator=first.generator(batch, device))
    torch.rand(100)  # other consumers of the global RNG change nothing
    assert torch.equal(draw, torch.rand(4, generator=second.generator(batch, device)))
    assert not torch.equal(draw, torch.rand(4, generator=first.generator(other, device)))


def test_dropout_zeroes_and_rescales() -> None:
    x = torch.ones(2000)
    out = dropout(x, 0.25, torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.unique(), torch.tensor([0.0, 4 / 3]))
    assert abs((out == 0).float().mean().item() - 0.25) < 0.05
    assert dropout(x, 0.0, torch.Generator()) is x

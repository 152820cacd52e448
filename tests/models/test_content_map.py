"""The ridge map from item features to learned item vectors (cold-start placement for any model)."""

from __future__ import annotations

import pytest
import torch

from lmmrec.errors import DataError
from lmmrec.models.content_map import choose_content_map, fit_ridge_path


def _items(n: int = 40, seed: int = 0) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Two modalities on different scales and ``[n, 3]`` targets exactly affine in them."""
    gen = torch.Generator().manual_seed(seed)
    feats = {
        "image": 5.0 + 3.0 * torch.randn(n, 4, generator=gen),
        "text": 0.01 * torch.randn(n, 2, generator=gen),
    }
    weight = torch.randn(6, 3, generator=gen)
    targets = torch.cat([feats["image"], feats["text"]], dim=1) @ weight + torch.tensor([1.0, 2, 3])
    return feats, targets


def test_a_small_penalty_recovers_an_affine_map_on_new_items() -> None:
    feats, targets = _items(60)
    path = fit_ridge_path({m: f[:50] for m, f in feats.items()}, targets[:50], (1e-8, 1e3))
    head = path.head(1e-8)  # standardisation folded in: the head reads raw features
    assert head.dims == {"image": 4, "text": 2} and head.dim == 3
    new = {m: f[50:] for m, f in feats.items()}
    torch.testing.assert_close(head(new), targets[50:], atol=1e-4, rtol=1e-4)
    assert path.loo_error[1e-8] < 1e-8 < path.loo_error[1e3]
    # a large penalty shrinks towards the mean item
    shrunk = path.head(1e9)(new)
    torch.testing.assert_close(shrunk, targets[:50].mean(0).expand(10, -1), atol=1e-3, rtol=0)


@pytest.mark.parametrize("n", [4, 30])  # fewer items than features (the n x n Gram), more
def test_the_head_is_the_closed_form_ridge_solution(n: int) -> None:
    feats, targets = _items(n, seed=4)
    targets = targets + torch.randn(n, 3, generator=torch.Generator().manual_seed(5))
    head = fit_ridge_path(feats, targets, (2.0,)).head(2.0)
    x = torch.cat([feats["image"], feats["text"]], dim=1).double()
    mean, scale = x.mean(0), x.std(0)
    z = (x - mean) / scale
    y = targets.double()
    weight = torch.linalg.solve(z.T @ z + 2.0 * torch.eye(6), z.T @ (y - y.mean(0)))  # [6, 3]
    got = head(feats).double()
    torch.testing.assert_close(got, z @ weight + y.mean(0), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("n", [5, 12])
def test_leave_one_out_error_is_the_refit_without_each_item(n: int) -> None:
    """The hat-matrix shortcut against refitting n times (same standardisation and centring)."""
    feats, targets = _items(n, seed=1)
    targets = targets + 0.5 * torch.randn(n, 3, generator=torch.Generator().manual_seed(2))
    ridge = 3.0
    path = fit_ridge_path(feats, targets, (ridge,))
    x = torch.cat([feats["image"], feats["text"]], dim=1).double()
    z = (x - x.mean(0)) / x.std(0)
    y = targets.double() - targets.double().mean(0)
    errors = []
    for i in range(n):
        keep = torch.arange(n) != i
        weight = torch.linalg.solve(z[keep].T @ z[keep] + ridge * torch.eye(6), z[keep].T @ y[keep])
        errors.append(((y[i] - z[i] @ weight) ** 2).mean())
    assert path.loo_error[ridge] == pytest.approx(float(torch.stack(errors).mean()), rel=1e-9)


def test_the_choice_follows_the_score_or_the_leave_one_out_error() -> None:
    feats, targets = _items()
    targets = targets + torch.randn(40, 3, generator=torch.Generator().manual_seed(3))
    path = fit_ridge_path(feats, targets, (0.1, 1.0, 10.0, 100.0))
    by_loo = choose_content_map(path)
    assert by_loo.selected_by == "leave-one-out error"
    assert by_loo.scores[by_loo.ridge] == min(path.loo_error.values())
    # a score that prefers small weights picks the largest penalty; ties go to the smaller
    chosen = choose_content_map(
        path, lambda head: -sum(float(w.norm()) for w in head.weight.values()), "short"
    )
    assert chosen.ridge == 100.0 and chosen.selected_by == "short"
    assert choose_content_map(path, lambda head: 1.0).ridge == 0.1
    torch.testing.assert_close(chosen.head(feats), path.head(100.0)(feats))


def test_bad_fits_are_clear_errors() -> None:
    feats, targets = _items()
    with pytest.raises(DataError, match="needs item features; train the model with a feature set"):
        fit_ridge_path({}, targets)
    with pytest.raises(DataError, match="penalties must be positive"):
        fit_ridge_path(feats, targets, (0.0,))
    with pytest.raises(DataError, match="40 feature rows and 39 vectors"):
        fit_ridge_path(feats, targets[:39])

"""One-line messages from pydantic validation errors (lmmrec.errors)."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from lmmrec.errors import unknown_name, validation_problems


class _Train(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epochs: int = 10
    lr: float = 1e-3


class _Run(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    train: _Train = _Train()
    models: dict[str, _Train] = {}


def _error(data: dict) -> ValidationError:
    with pytest.raises(ValidationError) as caught:
        _Run.model_validate(data)
    return caught.value


def test_unknown_name_suggests_the_closest_and_lists_all() -> None:
    assert unknown_name("epoch", ["epochs", "lr"]) == (
        "unknown key 'epoch' (did you mean 'epochs'?); known: epochs, lr"
    )
    assert unknown_name("zzz", [], "model") == "unknown model 'zzz'; known: none"


def test_unknown_keys_are_named_with_the_fields_of_their_own_level() -> None:
    message = validation_problems(
        _error({"name": "a", "nmae": "b", "train": {"epoch": 3}, "models": {"x": {"lrr": 1}}}),
        _Run,
    )
    assert message == (
        "train.epoch: unknown key 'epoch' (did you mean 'epochs'?); known: epochs, lr; "
        "models.x.lrr: unknown key 'lrr' (did you mean 'lr'?); known: epochs, lr; "
        "nmae: unknown key 'nmae' (did you mean 'name'?); known: name, train, models"
    )


def test_bad_values_show_what_was_given_and_missing_keys_do_not() -> None:
    message = validation_problems(_error({"train": {"lr": "fast"}}), _Run)
    assert message.startswith("name: Field required; train.lr: Input should be a valid number")
    assert message.endswith("(got 'fast')") and "\n" not in message


def test_without_the_model_unknown_keys_keep_pydantic_s_message() -> None:
    message = validation_problems(_error({"name": "a", "extra": 1}))
    assert message == "extra: Extra inputs are not permitted (got 1)"

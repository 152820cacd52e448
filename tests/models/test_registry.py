"""The model registry: lookup, validation of hyper-parameters, registration rules."""

from __future__ import annotations

import pytest

from lmmrec.errors import ConfigError
from lmmrec.models import Recommender, get, names, register
from lmmrec.models.bpr import BPR, BPRConfig
from lmmrec.models.registry import make_config


def test_built_in_models_are_registered() -> None:
    assert {"bpr", "lightgcn"} <= set(names())
    assert get("BPR") is BPR


def test_unknown_model_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"known models: .*bpr"):
        get("bpr2")


def test_unknown_and_invalid_hyper_parameters_are_errors() -> None:
    with pytest.raises(ConfigError, match="embeding_size"):
        make_config("bpr", {"embeding_size": 3})
    with pytest.raises(ConfigError, match="embedding_size"):
        make_config("bpr", {"embedding_size": -1})
    assert make_config("bpr", {"embedding_size": 8}) == BPRConfig(embedding_size=8)


def test_registration_refuses_duplicates_and_bad_names() -> None:
    class Clash(BPR):
        name = "bpr"

    with pytest.raises(ValueError, match="already registered"):
        register(Clash)

    class BadName(BPR):
        name = "Bad-Name"

    with pytest.raises(ValueError, match="lower-case"):
        register(BadName)
    assert issubclass(get("bpr"), Recommender)

"""Each choice of the few-shot config is its registry: a name in a ``Literal`` of
:class:`episodes.config.FewShotConfig` is exactly a key of the dict that builds it, so adding one without the
other fails here."""

from __future__ import annotations

import typing

import pytest

from episodes.backbones import BACKBONES
from episodes.config import FewShotConfig
from episodes.datasets import LOADERS
from episodes.recipe import AUTO_TEST_EPISODES, LEARNERS


def _choices(field: str) -> set[str]:
    tp = typing.get_type_hints(FewShotConfig)[field]
    assert typing.get_origin(tp) is typing.Literal, f"{field} is not a Literal"
    return set(typing.get_args(tp))


@pytest.mark.parametrize(("field", "registry"), [
    ("learner", LEARNERS), ("dataset", LOADERS), ("backbone", BACKBONES),
])
def test_config_literal_equals_its_registry(field, registry):
    assert _choices(field) == set(registry)


def test_every_learner_has_a_default_number_of_test_episodes():
    assert set(AUTO_TEST_EPISODES) == set(LEARNERS)


def test_every_dataset_option_is_a_config_field():
    fields = set(typing.get_type_hints(FewShotConfig))
    assert {k for e in LOADERS.values() for k in e.options} <= fields

"""ForestSpec / EdgeSpec: one validated spec of the forest's options, one spelling per option."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from monai_shf.forest import (
    EDGE_OPTIONS,
    FOREST_OPTIONS,
    EdgeSpec,
    ForestSpec,
    build_forest,
    edge_forest,
    soft_edge_map,
)


def test_defaults_and_normalised_values():
    spec = ForestSpec.create(length=np.int64(64), thresholds=[20, 40])
    assert spec.length == 64 and type(spec.length) is int
    assert spec.edges == EdgeSpec(thresholds=(20.0, 40.0))
    assert spec.criterion == "error" and spec.fill == "uniform" and spec.patch_size is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        spec.length = 3
    assert hash(spec) == hash(ForestSpec.create(length=64, thresholds=(20, 40)))


def test_create_from_a_mapping_a_spec_or_a_length():
    config = {"length": 128, "patch_size": 8, "criterion": "edges", "edge_kind": "canny", "kernel_size": 5}
    spec = ForestSpec.create(config)
    assert spec.options() == {**ForestSpec(128).options(), **config}
    assert ForestSpec.create(spec.options()) == spec  # options() reads back
    assert ForestSpec.create(spec, min_size=4) == spec.replace(min_size=4) != spec
    assert ForestSpec.create(32) == ForestSpec(32)
    nested = ForestSpec.create({"length": 128, "edges": {"edge_kind": "canny"}})
    assert nested.edges.edge_kind == "canny"
    assert set(spec.options()) == set(FOREST_OPTIONS) | set(EDGE_OPTIONS)


@pytest.mark.parametrize(
    "options, error, match",
    [
        ({"length": 0}, ValueError, "length"),
        ({"length": 2.5}, TypeError, "length"),
        ({"length": 8, "criterion": "area"}, ValueError, "criterion"),
        ({"length": 8, "fill": "area"}, ValueError, "fill"),
        ({"length": 8, "kernel_size": 4}, ValueError, "odd"),
        ({"length": 8, "thresholds": (100, 50)}, ValueError, "low <= high"),
        ({"length": 8, "thresholds": "50"}, TypeError, "pair"),
        ({"length": 8, "area_prior": -1}, ValueError, "area_prior"),
        ({"length": 8, "edge_kind": "sobel"}, ValueError, "edge_kind"),
        ({"length": 8, "criterium": "edges"}, ValueError, "did you mean 'criterion'"),
        ({"length": 8, "split_criterion": "edges"}, ValueError, "now called 'criterion'"),
        ({"length": 8, "edge_channel_reduction": "max"}, ValueError, "now called 'channel_reduction'"),
        ({"patch_size": 8}, ValueError, "needs length"),
    ],
)
def test_bad_options_are_errors_naming_them(options, error, match):
    with pytest.raises(error, match=match):
        ForestSpec.create(**options)


def test_every_entry_point_builds_the_same_forest_from_one_spec():
    rng = np.random.default_rng(0)
    image = (rng.random((1, 96, 80)) * 255).astype(np.uint8)
    spec = ForestSpec.create(length=100, patch_size=4, kernel_size=5, thresholds=(20, 40))
    direct = build_forest(soft_edge_map(image, 5, (20, 40)), spec)
    assert edge_forest(image, spec) == direct
    assert edge_forest(image, 100, patch_size=4, kernel_size=5, thresholds=(20, 40)) == direct
    assert build_forest(soft_edge_map(image, 5, (20, 40)), length=100, patch_size=4) == direct
    with pytest.raises(ValueError, match="unknown forest option"):
        build_forest(soft_edge_map(image), 100, no_such_option=1)

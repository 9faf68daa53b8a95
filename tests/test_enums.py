"""String enums of the choices: plain strings still work, members work, errors name the parameter."""

from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from monai_shf import enums
from monai_shf.enums import SerializeMode, SplitCriterion, look_up, values
from monai_shf.forest import SERIALIZE_MODES, SPLIT_CRITERIA, ForestSpec
from monai_shf.slide import SLIDE_BACKENDS
from monai_shf.transforms import HierarchicalPatch
from monai_shf.validation import check_choice


def test_exported_tuples_are_the_enum_values():
    assert SERIALIZE_MODES == ("area", "nearest", "fraction") == values(SerializeMode)
    assert SPLIT_CRITERIA == ("error", "edges") == values(SplitCriterion)
    assert SLIDE_BACKENDS == values(enums.SlideBackend)


def test_members_are_their_strings():
    assert SerializeMode.AREA == "area" and str(SerializeMode.AREA) == "area"
    assert f"{SplitCriterion.EDGES}" == "edges"


def test_look_up_names_the_parameter_and_suggests():
    assert look_up(" nearest", "mode", SerializeMode) is SerializeMode.NEAREST
    with pytest.raises(ValueError, match=r"^mode: By 'aera', did you mean 'area'\?"):
        look_up("aera", "mode", SerializeMode)


def test_check_choice_takes_enums_and_returns_plain_strings():
    value = check_choice(SplitCriterion.EDGES, "criterion", SplitCriterion)
    assert value == "edges" and type(value) is str
    assert type(check_choice("error", "criterion", SPLIT_CRITERIA)) is str
    with pytest.raises(ValueError, match=r"criterion must be one of .*did you mean 'edges'"):
        check_choice("edge", "criterion", SplitCriterion)


def test_a_spec_made_with_members_stays_plain_and_dumps_to_yaml():
    spec = ForestSpec.create(length=16, criterion=SplitCriterion.EDGES)
    assert spec == ForestSpec.create(length=16, criterion="edges")
    assert "criterion: edges" in yaml.safe_dump(spec.options())


def test_transforms_take_members_and_look_up_errors():
    patch = HierarchicalPatch(16, 4, mode=SerializeMode.NEAREST)
    assert patch.mode == "nearest" and type(patch.mode) is str
    with pytest.raises(ValueError, match="mode: By 'nearst', did you mean 'nearest'"):
        HierarchicalPatch(16, 4, mode="nearst")


def test_enums_import_without_monai():
    code = "import sys, monai_shf.enums; print(any(m == 'monai' or m.startswith('monai.') for m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.stdout.strip() == "False", done.stderr

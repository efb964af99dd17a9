"""write_json / json_dumps write strict JSON: NaN and +-inf become null, everywhere."""

import json
import math

import numpy as np
import pytest
import torch

from fewshot_sla.utils import json_dumps, read_json, write_json


def strict_loads(text):
    """Parse like a strict parser (jq, JSON.parse): the NaN / Infinity literals are errors."""

    def reject(constant):
        raise ValueError(f"non-JSON constant {constant!r}")

    return json.loads(text, parse_constant=reject)


def test_strict_loader_rejects_what_python_writes_by_default():
    with pytest.raises(ValueError, match="non-JSON constant 'NaN'"):
        strict_loads(json.dumps({"a": math.nan}))


def test_non_finite_values_become_null_at_any_depth(tmp_path):
    record = {
        "acc": 0.5,
        "few": math.nan,
        "inf": math.inf,
        "neg": -math.inf,
        "np_scalar": np.float32("nan"),
        "np64": np.float64(0.25),
        "np_int": np.int64(3),
        "np_bool": np.bool_(True),
        "flag": False,
        "array": np.array([1.0, np.nan, np.inf]),
        "tensor": torch.tensor([[0.5, float("nan")], [float("-inf"), 2.0]]),
        "scalar_tensor": torch.tensor(float("nan")),
        "int_tensor": torch.tensor([1, 2]),
        "nested": {"rows": [{"AG": math.nan, "SI": 0.1}], "tuple": (math.nan, 1)},
        "missing": None,
    }
    path = tmp_path / "metrics.json"
    write_json(record, path)
    parsed = strict_loads(path.read_text())
    assert parsed == {
        "acc": 0.5,
        "few": None,
        "inf": None,
        "neg": None,
        "np_scalar": None,
        "np64": 0.25,
        "np_int": 3,
        "np_bool": True,
        "flag": False,
        "array": [1.0, None, None],
        "tensor": [[0.5, None], [None, 2.0]],
        "scalar_tensor": None,
        "int_tensor": [1, 2],
        "nested": {"rows": [{"AG": None, "SI": 0.1}], "tuple": [None, 1]},
        "missing": None,
    }
    assert read_json(path) == parsed
    assert math.isnan(record["few"]) and math.isnan(record["nested"]["rows"][0]["AG"])  # caller's dict untouched


def test_json_dumps_is_strict_and_keeps_plain_values():
    text = json_dumps({"b": [1, 2.5, "x", math.nan], "a": None}, sort_keys=True)
    assert text == '{"a": null, "b": [1, 2.5, "x", null]}'
    assert strict_loads(text) == {"a": None, "b": [1, 2.5, "x", None]}


def test_unserialisable_object_is_a_clear_type_error(tmp_path):
    with pytest.raises(TypeError, match="not JSON serializable"):
        write_json({"obj": object()}, tmp_path / "x.json")
    assert not (tmp_path / "x.json").exists()  # atomic: nothing half-written

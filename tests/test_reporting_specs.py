"""Each package's reporting module: a valid report spec whose keys are its config's, GROUP_IGNORE and
LEGACY_DEFAULTS naming real fields, data identities without paths, and nothing heavy imported."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import typing
from pathlib import Path
from types import ModuleType

import pytest

from episodes import reporting as fs_reporting
from episodes.config import FewShotConfig
from fewshot_sla.report import KIND_MODULES, check_spec, report_spec
from fewshot_sla.runs import RUN_KEYS
from longtail import reporting as lt_reporting
from longtail.config import LTConfig

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = [
    pytest.param(fs_reporting, FewShotConfig, id="episodes"),
    pytest.param(lt_reporting, LTConfig, id="longtail"),
]


@pytest.mark.parametrize("mod, config", PACKAGES)
def test_spec_and_keys_name_the_packages_config(mod: ModuleType, config: type):
    check_spec(mod.REPORT)
    fields = {f.name: f for f in dataclasses.fields(config)}
    assert set(mod.REPORT["name_keys"]) <= set(fields) and set(mod.REPORT["context_keys"]) <= set(fields)
    assert mod.GROUP_IGNORE <= set(fields) and not mod.GROUP_IGNORE & RUN_KEYS  # the engine's are the core's
    assert not (set(mod.REPORT["name_keys"]) | set(mod.REPORT["context_keys"])) & mod.GROUP_IGNORE
    assert set(mod.LEGACY_DEFAULTS) <= set(fields)
    datasets = set(typing.get_args(typing.get_type_hints(config)["dataset"]))
    assert mod.IMAGE_FOLDERS <= datasets


@pytest.mark.parametrize("mod, config", PACKAGES)
def test_data_identity_names_image_folders_by_their_files_only(mod: ModuleType, config: type):
    named = sorted(set(typing.get_args(typing.get_type_hints(config)["dataset"])) - mod.IMAGE_FOLDERS)
    assert named and all(mod.data_identity(d) == {} == mod.data_identity(d, "ab12") for d in named)
    assert mod.data_identity("imagefolder", "3fa2b1c0d9") == {"files": "3fa2b1c0d9"}
    with pytest.raises(ValueError, match="digest of its file list"):
        mod.data_identity("imagefolder")


def test_longtail_legacy_defaults_are_the_old_behaviour():
    assert lt_reporting.LEGACY_DEFAULTS == {"vs_gamma": 0.2, "vs_tau": 1.2, "sam_rho": 0.0, "warmup": "epoch",
                                            "norm_stats": "cifar", "sync_bn": False, "drop_last": False}
    # the few-shot keys added since the committed runs: pretrain's and --init do not act on episodic learners (their
    # old-behaviour values are the defaults); the committed ProtoNets used the squared distance and one encoder call,
    # which are no longer the defaults
    from episodes.config import FewShotConfig

    legacy = fs_reporting.LEGACY_DEFAULTS
    inert = {k: v for k, v in legacy.items() if k not in ("distance", "encode")}
    assert inert == {k: getattr(FewShotConfig(), k) for k in inert}
    assert (legacy["distance"], legacy["encode"]) == ("sqeuclidean", "joint")
    assert (FewShotConfig().distance, FewShotConfig().encode) == ("euclidean", "separate")
    assert set(fs_reporting.LEGACY_DEFAULTS) == {"pretrain_epochs", "batch_size", "val_every_epochs", "test_head",
                                                 "sd", "init", "distance", "encode"}


@pytest.mark.parametrize("package", ["episodes", "longtail"])
def test_reporting_modules_import_only_the_core(package: str):
    tree = ast.parse((ROOT / package / "reporting.py").read_text())
    mods = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    mods |= {n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert {m.split(".")[0] for m in mods} <= {"__future__", "typing", "fewshot_sla"}


@pytest.mark.parametrize("mod, config", PACKAGES)
def test_the_package_registers_its_table_under_the_kind_its_recipe_records(mod: ModuleType, config: type):
    recipe = importlib.import_module(mod.__name__.replace(".reporting", ".recipe"))
    assert report_spec(recipe.KIND) is mod.REPORT and KIND_MODULES[recipe.KIND] == mod.__name__

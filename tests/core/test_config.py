from dataclasses import dataclass
from pathlib import Path

import pytest

from fewshot_sla.config import ConfigError, config_from_dict, load_config, parse_config, save_config


@dataclass
class Cfg:
    lr: float = 0.1  # learning rate
    epochs: int = 10  # training epochs
    transform: str = "rotation"  # SLA transform
    sd: bool = False  # self-distillation
    milestones: tuple[int, ...] = (160, 180)  # lr steps
    out: str | None = None  # output folder


def test_defaults_yaml_then_flags(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("lr: 0.05\nepochs: 3\nmilestones: [1, 2]\n")
    cfg = parse_config(Cfg, ["--config", str(f), "--epochs", "7", "--sd", "--out", "x"])
    assert cfg == Cfg(lr=0.05, epochs=7, sd=True, milestones=(1, 2), out="x")
    assert parse_config(Cfg, []) == Cfg()
    assert parse_config(Cfg, ["--milestones", "5", "6", "--no-sd"]).milestones == (5, 6)


def test_unknown_keys_rejected(tmp_path, capsys):
    f = tmp_path / "c.yaml"
    f.write_text("lr: 0.05\nlearning_rate: 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(Cfg, f)
    see = "--help lists the keys (its options, with _ for -)"
    assert str(e.value) == f"unknown config key 'learning_rate' in {f}; {see}"
    f.write_text("epohcs: 3\nmile_stones: [1]\nzzz: 1\n")
    with pytest.raises(ConfigError) as e:
        load_config(Cfg, f)
    assert str(e.value) == (f"unknown config keys 'epohcs' (did you mean 'epochs'?), 'mile_stones' (did you mean "
                            f"'milestones'?), 'zzz' in {f}; {see}")
    with pytest.raises(SystemExit):
        parse_config(Cfg, ["--nope", "1"])


@pytest.mark.parametrize("module, config", [("episodes.train", "episodes.config:FewShotConfig"),
                                            ("longtail.benchmark", "longtail.config:LTConfig")])
def test_config_typo_is_one_line_with_the_closest_key(tmp_path, capsys, module, config):
    """A typo in a config file used to print argparse's whole usage and every known key around its one line."""
    import importlib

    mod, cls = config.split(":")
    key = "meta_batch" if cls == "FewShotConfig" else "batch_size"
    typo = key[:-2] + key[-1] + key[-2]  # meta_bacth, batch_siez
    f = tmp_path / "c.yaml"
    f.write_text(f"{typo}: 4\n")
    with pytest.raises(SystemExit) as e:
        importlib.import_module(module).main(["--config", str(f)])
    assert e.value.code == 2
    prog = "sla-fewshot" if module == "episodes.train" else "sla-longtail"
    assert capsys.readouterr().err == f"{prog}: error: unknown config key '{typo}' in {f}; did you mean '{key}'?\n"
    assert getattr(importlib.import_module(mod), cls)().__dict__[key] is not None


def test_bad_values_and_roundtrip(tmp_path):
    with pytest.raises(ConfigError, match="cannot read 'abc' as int"):
        config_from_dict(Cfg, {"epochs": "abc"})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(Cfg, tmp_path / "missing.yaml")
    cfg = Cfg(lr=0.2, milestones=(3,), out="o")
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(Cfg, tmp_path / "config.yaml") == cfg


@pytest.mark.parametrize("module", ["episodes.train", "longtail.benchmark", "fewshot_sla.demo"])
def test_every_cli_prints_its_help(module, capsys):
    """--help of every entry point works (a '%' in a field comment once crashed argparse)."""
    import importlib

    with pytest.raises(SystemExit) as e:
        importlib.import_module(module).main(["--help"])
    assert e.value.code == 0 and "--seed" in capsys.readouterr().out


@dataclass
class Commented:
    short: int = 1  # on the line
    # too long for the line,
    # so above it
    long_name: str = "x"
    bare: int = 2


def test_help_reads_a_field_comment_on_its_line_or_right_above_it(capsys):
    with pytest.raises(SystemExit):
        parse_config(Commented, ["--help"], prog="demo")
    out = " ".join(capsys.readouterr().out.split())
    assert "--short SHORT on the line (default: 1)" in out
    assert "--long-name LONG_NAME, --long_name LONG_NAME too long for the line, so above it (default: x)" in out
    assert "--bare BARE (default: 2)" in out  # a comment belongs to the next field only


def test_find_recipe_names_a_shipped_recipe_by_any_of_its_spellings(tmp_path, monkeypatch):
    """``--config NAME`` finds the recipe shipped as package data, whatever the working directory."""
    from fewshot_sla.config import find_recipe, recipe_names

    monkeypatch.chdir(tmp_path)  # no source tree around: only the package's own files
    want = find_recipe("longtail/cifar10_ir100_ldam_drw", "longtail")
    assert want.name == "cifar10_ir100_ldam_drw.yaml" and want.parent.parent.name == "longtail"
    old_path = "configs/longtail/cifar10_ir100_ldam_drw.yaml"
    for spelling in ("cifar10_ir100_ldam_drw", "cifar10_ir100_ldam_drw.yaml", old_path):
        assert find_recipe(spelling, "longtail") == want
    shot = find_recipe("tiny-imagenet/gpu_protonet_5w1s_sla", "episodes")
    assert shot.parts[-3:] == ("configs", "tiny-imagenet", "gpu_protonet_5w1s_sla.yaml")
    assert "mini-imagenet/svm_5w5s_sla" in recipe_names("episodes")
    local = tmp_path / "mine.yaml"
    local.write_text("epochs: 3\n")
    assert find_recipe("mine.yaml", "longtail") == Path("mine.yaml")  # a file wins over a recipe name


def test_a_missing_recipe_names_where_it_looked_and_what_exists(tmp_path, monkeypatch):
    from fewshot_sla.config import find_recipe

    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as e:
        find_recipe("longtail/cifar10_ir50_ldam_drw", "longtail")
    msg = str(e.value)
    assert "longtail/configs/cifar10_ir50_ldam_drw.yaml" in msg and "cifar10_ir100_ldam_drw" in msg
    with pytest.raises(ConfigError, match="does not exist"):
        find_recipe("nope.yaml")  # no package: a plain file or nothing


def test_the_clis_read_a_recipe_by_name(tmp_path, monkeypatch):
    from episodes.config import FewShotConfig
    from longtail.config import LTConfig

    monkeypatch.chdir(tmp_path)
    lt = parse_config(LTConfig, ["--config", "longtail/cifar10_ir100_ldam_drw"], package="longtail")
    assert (lt.loss, lt.drw, lt.epochs) == ("ldam", True, 200)
    fs = parse_config(FewShotConfig, ["--config", "mini-imagenet/svm_5w5s_sla"], package="episodes")
    assert (fs.learner, fs.shots, fs.dataset) == ("svm", 5, "mini-imagenet")

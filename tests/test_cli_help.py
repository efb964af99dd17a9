"""Every command's ``--help``: it names its command, explains every option, and loads no torch (so it answers
at once); ``import fewshot_sla, episodes, longtail`` loads torch only when a name that needs it is used."""

from __future__ import annotations

import argparse
import importlib
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import tomllib

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
#: every command line: the console scripts, and the one run with ``python -m``
COMMANDS = {**SCRIPTS, "python -m episodes.demo": "episodes.demo:main"}


def _env() -> dict[str, str]:
    import os

    return {**os.environ, "PYTHONPATH": str(ROOT)}


def test_every_package_cli_is_listed():
    """The table above covers each package's entry points (a new console script is checked without an edit)."""
    assert {"sla-fewshot", "sla-longtail", "sla-report", "sla-grid", "sla-demo", "sla-fewshot-predict",
            "sla-longtail-predict"} <= set(SCRIPTS)


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_help_names_its_command_and_explains_every_option(command, monkeypatch, capsys):
    module, func = COMMANDS[command].split(":")
    main = getattr(importlib.import_module(module), func)
    parsers: list[argparse.ArgumentParser] = []
    parse = argparse.ArgumentParser.parse_known_args

    def recording(self, *a, **kw):
        parsers.append(self)
        return parse(self, *a, **kw)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_known_args", recording)
    monkeypatch.setattr(sys, "argv", ["somewhere/else.py"])  # argparse's fallback prog: must not be used
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: {command} ")
    (parser,) = parsers
    assert parser.prog == command
    unexplained = []
    for action in parser._actions:
        text = re.sub(r"\(default: [^)]*\)", "", action.help or "").strip()
        if action.option_strings and not text:
            unexplained.append(action.option_strings[0])
    assert unexplained == [], f"{command}: options without a help line: {unexplained}"


def test_help_loads_no_torch():
    """Each command's ``main(['--help'])`` in a fresh interpreter: torch (and numpy) are never imported."""
    code = (
        "import contextlib, io, importlib, json, sys\n"
        f"commands = {json.dumps(COMMANDS)}\n"
        "loaded = {}\n"
        "for command, target in commands.items():\n"
        "    module, func = target.split(':')\n"
        "    with contextlib.redirect_stdout(io.StringIO()), contextlib.suppress(SystemExit):\n"
        "        getattr(importlib.import_module(module), func)(['--help'])\n"
        "    loaded[command] = sorted(m for m in ('torch', 'numpy') if m in sys.modules)\n"
        "print(json.dumps(loaded))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, check=True)
    loaded = json.loads(out.stdout.strip().splitlines()[-1])
    assert loaded == {command: [] for command in COMMANDS}


def test_packages_import_torch_on_first_use_of_a_name_that_needs_it():
    code = (
        "import json, sys\n"
        "import fewshot_sla, episodes, longtail, fewshot_sla.report\n"
        "seen = {'after import': 'torch' in sys.modules}\n"
        "from fewshot_sla import __version__\n"
        "seen['version'] = __version__\n"
        "seen['after __version__'] = 'torch' in sys.modules\n"
        "from fewshot_sla import expand\n"
        "seen['after expand'] = 'torch' in sys.modules\n"
        "seen['expand'] = expand.__module__\n"
        "seen['SLAEpisode'] = episodes.SLAEpisode.__module__\n"
        "seen['make_loss'] = longtail.make_loss.__module__\n"
        "seen['write_report'] = fewshot_sla.report.write_report.__module__\n"
        "seen['engine'] = fewshot_sla.engine.__name__\n"  # a submodule, as before the names were lazy
        "missing = [f'{m.__name__}.{n}' for m in (fewshot_sla, episodes, longtail, fewshot_sla.report)\n"
        "           for n in m.__all__ if not hasattr(m, n) or n not in dir(m)]\n"
        "seen['missing'] = missing\n"
        "print(json.dumps(seen))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=_env(), capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen == {
        "after import": False,
        "version": "0.1.0",
        "after __version__": False,
        "after expand": True,
        "expand": "fewshot_sla.sla",
        "SLAEpisode": "episodes.sla_episode",
        "make_loss": "longtail.losses",
        "write_report": "fewshot_sla.report.document",
        "engine": "fewshot_sla.engine",
        "missing": [],
    }


@pytest.mark.parametrize("package", ["fewshot_sla", "episodes", "longtail", "fewshot_sla.report"])
def test_unknown_name_is_an_attribute_error(package):
    module = importlib.import_module(package)
    with pytest.raises(AttributeError, match=f"module '{package}' has no attribute 'no_such_name'"):
        module.no_such_name  # noqa: B018

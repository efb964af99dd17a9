"""fewshot_sla imports neither episodes nor longtail; those two do not import each other (STYLE.md); no module of the
three packages imports a command-line module (one that defines a top-level ``main``)."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {"fewshot_sla": {"episodes", "longtail"}, "episodes": {"longtail"}, "longtail": {"episodes"}}

#: Imports of command-line modules that are allowed (none: the experiment tooling lives in lab/, outside the
#: installed packages).
PENDING_CLI_IMPORTS: set[tuple[str, str]] = set()


def imported_top_levels(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_dependency_direction(package):
    files = sorted((ROOT / package).rglob("*.py"))
    assert files
    bad = {str(f.relative_to(ROOT)): sorted(imported_top_levels(f) & FORBIDDEN[package]) for f in files}
    assert {k: v for k, v in bad.items() if v} == {}


def module_files() -> dict[str, Path]:
    """Every module of the three packages by its dotted name (a package by its ``__init__.py``)."""
    out = {}
    for package in FORBIDDEN:
        for f in (ROOT / package).rglob("*.py"):
            parts = f.relative_to(ROOT).with_suffix("").parts
            out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = f
    return out


def imported_modules(name: str, path: Path, known: set[str]) -> set[str]:
    """The modules of ``known`` that ``path`` (module ``name``) imports anywhere in it, functions included:
    ``import a.b``, ``from a import b`` (``a.b`` where it is a module, else ``a``) and relative imports."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[: len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            found |= {f"{module}.{a.name}" if f"{module}.{a.name}" in known else module for a in node.names}
    return found & known


def defines_main(path: Path) -> bool:
    return any(isinstance(n, ast.FunctionDef) and n.name == "main" for n in ast.parse(path.read_text()).body)


def test_no_module_imports_a_command_line_module():
    modules = module_files()
    clis = {n for n, f in modules.items() if defines_main(f)}
    assert {"fewshot_sla.report.cli", "episodes.cli_predict", "longtail.cli_predict"} <= clis
    # a package's __main__ is a command line itself (``python -m``), never imported
    edges = {(n, m) for n, f in modules.items() if not n.endswith(".__main__")
             for m in imported_modules(n, f, set(modules)) if m in clis}
    assert edges - PENDING_CLI_IMPORTS == set()
    assert PENDING_CLI_IMPORTS <= edges  # an edge gone: drop it from the list


def test_the_import_scan_sees_every_form_of_import(tmp_path: Path):
    known = {"episodes", "episodes.cli_predict", "fewshot_sla.report", "fewshot_sla.report.cli"}
    cases = [
        ("episodes.x", "from .cli_predict import main", {"episodes.cli_predict"}),
        ("episodes.x", "from . import cli_predict", {"episodes.cli_predict"}),
        ("episodes.x", "def f():\n    from fewshot_sla.report.cli import main", {"fewshot_sla.report.cli"}),
        ("episodes.x", "import fewshot_sla.report.cli as c", {"fewshot_sla.report.cli"}),
        ("episodes.x", "from fewshot_sla.report import write_report", {"fewshot_sla.report"}),
        ("fewshot_sla.report.load", "from .cli import main", {"fewshot_sla.report.cli"}),
        ("fewshot_sla.report.load", "from .. import report", {"fewshot_sla.report"}),
    ]
    for name, source, want in cases:
        path = tmp_path / "case.py"
        path.write_text(source)
        assert imported_modules(name, path, known) == want, source

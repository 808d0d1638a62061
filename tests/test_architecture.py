"""The layout the architecture page (docs/architecture.md) describes: sub-packages in layers, imports one way only.

Every import of every module counts, those inside functions included: a lazy import that goes against the layers
hides a cycle rather than removing it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "pudding"

LAYERS = ("core", "search", "routerdata", "router", "routed", "integrations", "cli")
"""The sub-packages, lowest first: each may import itself and the ones before it, never one after it."""

ROOT_MODULES = {"__init__.py"}
"""What the package root holds beside the sub-packages: the public API only."""


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path) -> list[tuple[int, str]]:
    """(line, module) of every ``pudding`` import in the file, at any depth (functions, methods, conditionals)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.append((node.lineno, base))
            found += [(node.lineno, f"{base}.{alias.name}") for alias in node.names]
    return [(line, name) for line, name in found if name == "pudding" or name.startswith("pudding.")]


def layer(module: str) -> int | None:
    """The layer of a ``pudding.<sub>...`` module (None for the package root)."""
    parts = module.split(".")
    if len(parts) < 2 or parts[1] not in LAYERS:
        return None
    return LAYERS.index(parts[1])


def test_the_root_holds_only_the_public_api_and_the_sub_packages():
    files = {p.name for p in PACKAGE.iterdir() if p.is_file() and p.suffix == ".py"}
    folders = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").is_file()}
    assert files == ROOT_MODULES
    assert folders == set(LAYERS)


def test_imports_go_one_way_only_through_the_layers():
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        mine = layer(module_name(path))
        for line, name in imports_of(path):
            theirs = layer(name)
            if mine is not None and (theirs is None or theirs > mine):
                wrong.append(f"{path.relative_to(PACKAGE.parent)}:{line} imports {name}")
    assert not wrong, "imports against the layers (docs/architecture.md):\n" + "\n".join(wrong)


def test_the_check_sees_imports_inside_functions(tmp_path):
    """The checker itself: an import inside a function counts (the old router ⇄ router data cycle hid there)."""
    source = tmp_path / "pudding" / "core" / "x.py"
    source.parent.mkdir(parents=True)
    source.write_text("def f():\n    from pudding.router.model import Router\n    return Router\n")
    global PACKAGE
    saved, PACKAGE = PACKAGE, tmp_path / "pudding"
    try:
        found = imports_of(source)
    finally:
        PACKAGE = saved
    assert (2, "pudding.router.model") in found and layer("pudding.router.model") > layer("pudding.core.x")


@pytest.mark.parametrize("path", ["pudding.router.zeroshot.ZeroShotEvalCallback", "pudding.router.module.RouterModule"])
def test_class_paths_that_saved_configs_name_still_load(path):
    """Saved training configs (a run's config.yaml, a bundle's training_config.yaml) name these class paths."""
    import importlib

    module, _, name = path.rpartition(".")
    assert isinstance(getattr(importlib.import_module(module), name), type)

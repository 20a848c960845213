"""The emulator stands on its own: nothing under ``testing/`` imports the provider it emulates for."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import airflow_provider_xai_image.testing as testing_package

PROVIDER = "airflow_provider_xai_image"
TESTING = f"{PROVIDER}.testing"
MODULES = sorted(Path(testing_package.__file__).parent.glob("*.py"))


def provider_imports(source: str, package: str) -> list[str]:
    """Modules of the provider outside ``.testing`` that ``source`` (a module of ``package``) imports."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the module's package
                base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
                names = [f"{base}.{node.module}" if node.module else base]
            else:
                names = [node.module or ""]
        else:
            continue
        found += [
            name
            for name in names
            if (name == PROVIDER or name.startswith(f"{PROVIDER}."))
            and not (name == TESTING or name.startswith(f"{TESTING}."))
        ]
    return found


def test_every_module_is_checked() -> None:
    assert {path.stem for path in MODULES} >= {"backend", "contract", "responses", "schemas", "server"}


@pytest.mark.parametrize("path", MODULES, ids=lambda path: path.name)
def test_emulator_modules_do_not_import_the_provider(path: Path) -> None:
    assert provider_imports(path.read_text(), TESTING) == []


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("from airflow_provider_xai_image.api.images import DEFAULT_MODEL", ["airflow_provider_xai_image.api.images"]),
        ("import airflow_provider_xai_image.storage.image_checks", ["airflow_provider_xai_image.storage.image_checks"]),
        ("import airflow_provider_xai_image", ["airflow_provider_xai_image"]),
        ("from .. import models", ["airflow_provider_xai_image"]),
        ("from ..hooks import xai", ["airflow_provider_xai_image.hooks"]),
        ("from airflow_provider_xai_image.testing.contract import API_ROOT", []),
        ("from .contract import API_ROOT", []),
        ("import json", []),
    ],
)
def test_the_check_catches_provider_imports(source: str, expected: list[str]) -> None:
    assert provider_imports(source, TESTING) == expected

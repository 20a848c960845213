"""The package layout keeps its rules: a small root, short modules, the wire format free of Airflow, and a
sensor that needs no operator module."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import airflow_provider_xai_image

PACKAGE = "airflow_provider_xai_image"
PACKAGE_DIR = Path(airflow_provider_xai_image.__file__).parent
MODULES = sorted(path for path in PACKAGE_DIR.rglob("*.py") if "testing" not in path.relative_to(PACKAGE_DIR).parts)
MAX_LINES = 400


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE_DIR.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path) -> set[str]:
    """Every module ``path`` imports (absolute names; the package uses no relative imports)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: relative import"
            found.add(node.module or "")
            found |= {f"{node.module}.{alias.name}" for alias in node.names}
    return found


def provider_closure(path: Path) -> dict[str, set[str]]:
    """The modules of the package ``path`` imports, directly or through others, with what each imports."""
    by_name = {module_name(module): module for module in MODULES}
    seen: dict[str, set[str]] = {}
    todo = [module_name(path)]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen[name] = imported_modules(by_name[name])
        todo += [module for module in seen[name] if module in by_name and module != PACKAGE]
    return seen


def test_the_root_holds_at_most_five_modules() -> None:
    root = sorted(path.name for path in PACKAGE_DIR.glob("*.py") if path.name != "__init__.py")
    assert len(root) <= 5, root


@pytest.mark.parametrize("path", MODULES, ids=lambda path: module_name(path))
def test_no_module_is_longer_than_the_limit(path: Path) -> None:
    assert len(path.read_text().splitlines()) <= MAX_LINES


@pytest.mark.parametrize("path", sorted((PACKAGE_DIR / "api").glob("*.py")), ids=lambda path: module_name(path))
def test_the_wire_format_imports_no_airflow(path: Path) -> None:
    for name, imports in provider_closure(path).items():
        airflow = sorted(module for module in imports if module == "airflow" or module.startswith("airflow."))
        assert airflow == [], f"{name} (imported by {module_name(path)}) imports {airflow}"


def test_the_sensor_imports_no_operator_module() -> None:
    closure = provider_closure(PACKAGE_DIR / "sensors" / "batch.py")
    operators = sorted(name for name in closure if name.startswith(f"{PACKAGE}.operators"))
    assert operators == []


def test_the_closure_finds_imports_through_other_modules() -> None:
    closure = provider_closure(PACKAGE_DIR / "operators" / "batch.py")
    assert f"{PACKAGE}.api.images" in closure  # imported directly
    assert f"{PACKAGE}.hooks.redaction" in closure  # through other modules only

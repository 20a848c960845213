"""What users import and what Airflow stores keeps resolving: every import of the README and docs, both
trigger classpaths (kept in Airflow's database while a task is deferred), the provider info, the entry points."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import pytest
import tomllib

import airflow_provider_xai_image

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = "airflow_provider_xai_image"
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
CODE_BLOCK = re.compile(r"^```python\n(.*?)^```", re.DOTALL | re.MULTILINE)
#: Paths users hold on to besides the documents' examples.
STABLE_PATHS = [
    f"{PACKAGE}.triggers.generate.XaiGenerateImagesTrigger",
    f"{PACKAGE}.triggers.batch.XaiBatchTrigger",
    f"{PACKAGE}.hooks.xai.XaiHook",
    f"{PACKAGE}.operators.generate.XaiGenerateImagesOperator",
    f"{PACKAGE}.operators.batch.XaiBatchGenerateImagesOperator",
    f"{PACKAGE}.operators.batch.XaiStoreBatchResultsOperator",
    f"{PACKAGE}.operators.batch.XaiAssembleManifestOperator",
    f"{PACKAGE}.operators.review.XaiReviewImagesOperator",
    f"{PACKAGE}.sensors.batch.XaiBatchSensor",
    f"{PACKAGE}.plugins.gallery_plugin.XaiImageGalleryPlugin",
    f"{PACKAGE}.testing.XaiEmulator",
]


def import_string(path: str) -> object:
    """The object at a dotted path, found as Airflow finds a trigger's classpath (module, then attribute)."""
    module, _, name = path.rpartition(".")
    return getattr(importlib.import_module(module), name)


def documented_imports() -> list[str]:
    """``module.name`` of every ``from airflow_provider_xai_image... import name`` in the documents' Python blocks."""
    found = []
    for document in DOCUMENTS:
        for block in CODE_BLOCK.findall(document.read_text()):
            for node in ast.walk(ast.parse(block)):
                if isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == PACKAGE:
                    found += [f"{node.module}.{alias.name}" for alias in node.names]
    return sorted(set(found))


def test_the_documents_show_imports() -> None:
    assert f"{PACKAGE}.operators.generate.XaiGenerateImagesOperator" in documented_imports()


@pytest.mark.parametrize("path", documented_imports() + STABLE_PATHS)
def test_path_resolves(path: str) -> None:
    assert import_string(path) is not None


@pytest.mark.parametrize(
    ("trigger_path", "kwargs"),
    [
        (
            f"{PACKAGE}.triggers.generate.XaiGenerateImagesTrigger",
            {"plan_uri": "file:///data/run/task/plan.json", "plan_digest": "0" * 64, "xai_conn_id": "xai_default"},
        ),
        (f"{PACKAGE}.triggers.batch.XaiBatchTrigger", {"batch_ids": ["batch_1"], "xai_conn_id": "xai_default"}),
    ],
)
def test_trigger_classpath_round_trips(trigger_path: str, kwargs: dict) -> None:
    trigger_class = import_string(trigger_path)
    assert f"{trigger_class.__module__}.{trigger_class.__qualname__}" == trigger_path
    classpath, stored = trigger_class(**kwargs).serialize()
    assert classpath == trigger_path
    assert import_string(classpath)(**stored).serialize() == (classpath, stored)


def test_provider_info_modules_and_hook_resolve() -> None:
    info = airflow_provider_xai_image.get_provider_info()
    modules = [
        module
        for kind in ("hooks", "operators", "sensors", "triggers")
        for entry in info[kind]
        for module in entry["python-modules"]
    ]
    assert len(modules) == 6
    for module in modules:
        importlib.import_module(module)
    for connection_type in info["connection-types"]:
        assert import_string(connection_type["hook-class-name"]).conn_type == connection_type["connection-type"]


def test_entry_points_resolve() -> None:
    entry_points = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["entry-points"]
    targets = [target for group in entry_points.values() for target in group.values()]
    assert len(targets) == 3
    for target in targets:
        module, _, attribute = target.partition(":")
        loaded = importlib.import_module(module)
        if attribute:
            assert getattr(loaded, attribute) is not None


def test_every_name_the_emulator_package_exports_resolves() -> None:
    import airflow_provider_xai_image.testing as testing

    assert {name: getattr(testing, name).__name__ for name in ("LoggedRequest", "RequestRecord")} == {
        "LoggedRequest": "LoggedRequest",
        "RequestRecord": "LoggedRequest",  # its former name
    }
    for name in testing.__all__:
        assert getattr(testing, name) is not None, name

"""Airflow finds the provider: ``airflow providers list``, the ``xai`` connection form the UI gets, and the
gallery plugin. The three Airflow processes run at once (each spends seconds importing Airflow)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from compat_support import COMPAT_REQUIREMENTS, IN_COMPAT_VENV, ROOT, airflow_env, oldest_supported_airflow
from support.dag_runner import airflow_executable

from airflow_provider_xai_image import PACKAGE_NAME, __version__
from airflow_provider_xai_image.connection import CONN_FIELDS, UI_FIELD_BEHAVIOUR

#: What the UI's connection form is built from (``GET /ui/connections/hook_meta``), for the ``xai`` type.
#: Also the placeholders of the provider's own UI_FIELD_BEHAVIOUR afterwards (Airflow must not change them).
FORM_PROBE = """
import json
from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService
from airflow_provider_xai_image.connection import UI_FIELD_BEHAVIOUR
meta = next(m for m in HookMetaService.hook_meta_data() if m.connection_type == "xai")
print(json.dumps({**meta.model_dump(mode="json"), "placeholders_after": sorted(UI_FIELD_BEHAVIOUR["placeholders"])}))
"""


@pytest.fixture(scope="module")
def discovery() -> Iterator[dict[str, Any]]:
    """The JSON output of ``airflow providers list``, ``airflow plugins`` and :data:`FORM_PROBE` (none of
    them needs the metadata DB)."""
    env = airflow_env(Path(os.environ["AIRFLOW_HOME"]))
    commands = {
        "providers": [*airflow_executable(), "providers", "list", "-o", "json"],
        "plugins": [*airflow_executable(), "plugins", "-o", "json"],
        "form": [sys.executable, "-c", FORM_PROBE],
    }
    procs = {
        name: subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for name, command in commands.items()
    }
    try:
        outputs: dict[str, Any] = {}
        for name, proc in procs.items():
            out, err = proc.communicate(timeout=300)
            assert proc.returncode == 0, f"{' '.join(commands[name])} exited {proc.returncode}:\n{(out + err)[-8000:]}"
            outputs[name] = json.loads(out[min(i for i in (out.find("["), out.find("{")) if i >= 0) :])
        yield outputs
    finally:
        for proc in procs.values():
            if proc.poll() is None:
                proc.kill()
                proc.communicate()


def test_airflow_providers_list_shows_the_provider(discovery: dict[str, Any]) -> None:
    providers = {entry["package_name"]: entry for entry in discovery["providers"]}
    assert PACKAGE_NAME in providers
    assert providers[PACKAGE_NAME]["version"] == __version__


def test_the_connection_form_has_the_xai_fields(discovery: dict[str, Any]) -> None:
    """From 3.2 the extra fields come from the provider info's ``conn-fields``; before, Airflow ignores
    those and asks the hook (``get_connection_form_widgets``, wtforms): the form is the same."""
    form = discovery["form"]
    assert form["hook_class_name"] == "airflow_provider_xai_image.hooks.xai.XaiHook"
    assert form["hook_name"] == "xAI"
    fields = form["standard_fields"]
    assert (fields["password"]["title"], fields["host"]["title"]) == ("API Key", "Base URL")
    assert fields["host"]["placeholder"] == "https://api.x.ai/v1"
    assert [fields[name]["hidden"] for name in ("login", "port", "url_schema")] == [True, True, True]

    extras = form["extra_fields"]
    assert set(extras) == set(CONN_FIELDS)
    for name, field in CONN_FIELDS.items():
        assert extras[name]["value"] is None, f"{name} would be written into every connection saved from the UI"
        assert extras[name]["schema"]["title"] == field["label"]
        assert extras[name]["description"] == field["description"]
    assert form["placeholders_after"] == sorted(UI_FIELD_BEHAVIOUR["placeholders"])


def test_the_gallery_plugin_is_loaded(discovery: dict[str, Any]) -> None:
    """Loaded from its entry point, with the task instance tab and the FastAPI app (built: its imports
    from Airflow's API server resolve)."""
    plugins = {plugin["name"]: plugin for plugin in discovery["plugins"]}
    plugin = plugins["xai_image_gallery"]
    assert PACKAGE_NAME in plugin["source"]
    (view,) = plugin["external_views"]
    assert view["destination"] == "task_instance"
    assert view["href"].startswith("/xai-image-gallery/dags/{DAG_ID}/runs/{RUN_ID}/tasks/{TASK_ID}/")
    (app,) = plugin["fastapi_apps"]
    assert app["url_prefix"] == "/xai-image-gallery"
    assert app["app"] == "fastapi.applications.FastAPI"


@pytest.mark.parametrize("package", ["apache-airflow", "apache-airflow-providers-common-compat"])
def test_make_test_compat_installs_the_declared_lower_bound(package: str) -> None:
    """``make test-compat`` installs the lowest version pyproject.toml allows."""
    declared = re.search(rf'^\s*"{package}>=([^,"]+)', (ROOT / "pyproject.toml").read_text(), re.MULTILINE)
    pinned = re.search(rf"^{package}==(\S+)$", COMPAT_REQUIREMENTS.read_text(), re.MULTILINE)
    assert declared, f"no {package}>=X.Y.Z in pyproject.toml's dependencies"
    assert pinned, f"no {package}==X.Y.Z in {COMPAT_REQUIREMENTS}"
    assert declared.group(1) == pinned.group(1)


@pytest.mark.skipif(not IN_COMPAT_VENV, reason="only `make test-compat` runs on the oldest supported Airflow")
def test_this_session_runs_on_the_oldest_supported_airflow() -> None:
    from airflow import __version__ as airflow_version

    assert airflow_version == oldest_supported_airflow()

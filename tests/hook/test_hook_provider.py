"""Airflow discovers the provider: ProvidersManager in-process, and the ``airflow`` CLI in a subprocess.

The CLI tests share one throw-away AIRFLOW_HOME per module; ``airflow db migrate`` for it starts in the
background as soon as the module needs the home, so ``airflow providers list`` (no DB needed) runs
meanwhile.
"""

from __future__ import annotations

import base64
import importlib
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from airflow_provider_xai_image import PACKAGE_NAME, __version__
from airflow_provider_xai_image.hooks.xai import XaiHook

AIRFLOW = str(Path(sys.executable).parent / "airflow")
CLI_TIMEOUT = 180


# -- in-process discovery -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def providers_manager():
    from airflow.providers_manager import ProvidersManager

    return ProvidersManager()


def test_providers_manager_lists_the_package(providers_manager) -> None:
    assert PACKAGE_NAME == "airflow-provider-xai-image"
    assert PACKAGE_NAME in providers_manager.providers
    info = providers_manager.providers[PACKAGE_NAME]
    assert info.version == __version__
    assert info.data["name"] == "xAI Image"


def test_xai_connection_type_resolves_to_the_hook(providers_manager) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ProvidersManager.hooks is deprecated in favour of the task-sdk's
        hook_info = providers_manager.hooks["xai"]

    assert hook_info is not None
    assert hook_info.hook_class_name == "airflow_provider_xai_image.hooks.xai.XaiHook"
    module, _, name = hook_info.hook_class_name.rpartition(".")
    assert getattr(importlib.import_module(module), name) is XaiHook
    assert hook_info.connection_id_attribute_name == "xai_conn_id"
    assert hook_info.package_name == PACKAGE_NAME
    assert hook_info.hook_name == "xAI"
    assert hook_info.connection_testable is True


def test_connection_form_hides_and_relabels_fields(providers_manager) -> None:
    behaviour = providers_manager.field_behaviours["xai"]

    assert set(behaviour["hidden_fields"]) == {"schema", "port", "login"}
    assert behaviour["relabeling"] == {"password": "API Key", "host": "Base URL"}
    assert behaviour["placeholders"]["host"] == "https://api.x.ai/v1"


def test_connection_form_has_the_extra_fields(providers_manager) -> None:
    widgets = providers_manager.connection_form_widgets

    for name in ("timeout", "max_retries", "max_ambiguous_retries", "requests_per_second", "default_model"):
        widget = widgets[f"extra__xai__{name}"]
        assert widget.hook_class_name == "airflow_provider_xai_image.hooks.xai.XaiHook"
        assert widget.field_name == name
        assert widget.is_sensitive is False
        # Empty in the form: a connection saved from the UI follows the provider's defaults, shown as placeholders.
        assert widget.field.get("value") is None
    placeholders = providers_manager.field_behaviours["xai"]["placeholders"]
    assert placeholders["extra__xai__default_model"] == "grok-imagine-image-quality"
    assert placeholders["extra__xai__max_retries"] == "5"
    assert placeholders["extra__xai__max_ambiguous_retries"] == "0"  # never pay twice by default
    assert placeholders["extra__xai__timeout"] == "900.0"  # image requests take minutes
    assert placeholders["extra__xai__requests_per_second"] == "5"  # xAI's limit per model


def test_prefixed_form_extras_are_read_by_the_hook(emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the UI form stores (``extra__xai__<field>``) is what the hook reads."""
    extra = {
        "extra__xai__timeout": 7,
        "extra__xai__max_retries": 1,
        "extra__xai__max_ambiguous_retries": 2,
        "extra__xai__requests_per_second": "12.5",
        "extra__xai__default_model": "grok-imagine-image",
    }
    conn = {"conn_type": "xai", "password": emulator.api_key, "host": emulator.base_url, "extra": extra}
    monkeypatch.setenv("AIRFLOW_CONN_XAI_FORM", json.dumps(conn))
    hook = XaiHook(xai_conn_id="xai_form")

    assert (hook.settings.read_timeout, hook.settings.max_retries, hook.settings.max_ambiguous_retries) == (7.0, 1, 2)
    assert hook.settings.requests_per_second == 12.5  # the form's text field stores a string
    assert hook.generate_images("a form").model == "grok-imagine-image"
    assert emulator.requests_log[-1].json["model"] == "grok-imagine-image"


# -- the airflow CLI in a subprocess --------------------------------------------------------------


@dataclass
class CliHome:
    path: Path
    env: dict[str, str]
    migrate: subprocess.Popen[str]
    migrate_started: float
    migrate_seconds: float | None = None

    def wait_migrated(self) -> None:
        if self.migrate_seconds is None:
            out, _ = self.migrate.communicate(timeout=CLI_TIMEOUT)
            self.migrate_seconds = time.monotonic() - self.migrate_started
            assert self.migrate.returncode == 0, f"airflow db migrate failed:\n{out[-5000:]}"


def _cli_env(home: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(home / "plugins"),
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        }
    )
    env.setdefault("AIRFLOW__CORE__FERNET_KEY", base64.urlsafe_b64encode(os.urandom(32)).decode())
    for name in list(env):
        if name.startswith("AIRFLOW_CONN_"):
            del env[name]
    if env.pop("PYTHONDONTWRITEBYTECODE", None):  # without bytecode each CLI call recompiles Airflow
        prefix = os.environ.get("XAI_TESTS_PYCACHE_PREFIX")
        default = Path(tempfile.gettempdir()) / f"airflow-provider-xai-image-pycache-{os.getuid()}"
        env["PYTHONPYCACHEPREFIX"] = prefix or str(default)
    return env


@pytest.fixture(scope="module")
def cli_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliHome]:
    """A fresh AIRFLOW_HOME for this module's CLI calls; ``airflow db migrate`` runs in the background."""
    path = tmp_path_factory.mktemp("airflow-home")
    for sub in ("dags", "plugins", "logs"):
        (path / sub).mkdir()
    env = _cli_env(path)
    migrate = subprocess.Popen(
        [AIRFLOW, "db", "migrate"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    home = CliHome(path, env, migrate, time.monotonic())
    try:
        yield home
    finally:
        if migrate.poll() is None:
            migrate.kill()
            migrate.communicate()


def airflow_cli(home: CliHome, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [AIRFLOW, *args], env=home.env, capture_output=True, text=True, timeout=CLI_TIMEOUT, check=False
    )
    assert proc.returncode == 0, f"airflow {' '.join(args)} failed:\n{proc.stdout[-5000:]}\n{proc.stderr[-5000:]}"
    return proc


def test_cli_providers_list_shows_the_package(cli_home: CliHome) -> None:
    proc = airflow_cli(cli_home, "providers", "list", "-o", "json")

    providers = {entry["package_name"]: entry for entry in json.loads(proc.stdout[proc.stdout.index("[") :])}
    assert PACKAGE_NAME in providers
    assert providers[PACKAGE_NAME]["version"] == __version__


def test_cli_connections_add_and_get(cli_home: CliHome, emulator, monkeypatch: pytest.MonkeyPatch) -> None:
    cli_home.wait_migrated()
    airflow_cli(
        cli_home,
        "connections",
        "add",
        "xai_cli",
        "--conn-type",
        "xai",
        "--conn-password",
        emulator.api_key,
        "--conn-host",
        emulator.base_url,
        "--conn-extra",
        json.dumps({"timeout": 5, "max_retries": 1, "default_model": "grok-imagine-image"}),
    )

    proc = airflow_cli(cli_home, "connections", "get", "xai_cli", "-o", "json")

    [conn] = json.loads(proc.stdout[proc.stdout.index("[") :])
    assert conn["conn_id"] == "xai_cli"
    assert conn["conn_type"] == "xai"
    assert conn["host"] == emulator.base_url
    assert conn["password"] == emulator.api_key
    # (`-o json` prints extra values as strings; the stored extra keeps their JSON types, see get_uri.)
    assert conn["extra_dejson"] == {"timeout": "5", "max_retries": "1", "default_model": "grok-imagine-image"}
    # The URI Airflow writes for it, given to the hook as an environment variable, reaches the emulator.
    monkeypatch.setenv("AIRFLOW_CONN_XAI_CLI", conn["get_uri"])
    hook = XaiHook(xai_conn_id="xai_cli")
    assert hook.settings.base_url == emulator.base_url
    assert (hook.settings.read_timeout, hook.settings.max_retries) == (5.0, 1)
    ok, message = hook.test_connection()
    assert ok, message
    print(f"airflow db migrate took {cli_home.migrate_seconds:.1f} s")

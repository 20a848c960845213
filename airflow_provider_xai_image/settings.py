"""The deployment's settings of the provider, from Airflow's configuration (section ``[xai_image]``,
declared in the provider info so that ``airflow config list`` shows them).

* ``spool_dir``: where images wait on local disk until they are stored;
* ``allowed_local_source_roots``: the folders local (``file://``) source images may come from (empty: any);
* ``gallery_allowed_roots``: the storage roots the gallery may read at all (empty: any);
* ``gallery_max_manifest_mib``: the largest ``manifest.json`` the gallery reads.
"""

from __future__ import annotations

import os
import tempfile
from typing import Any

SECTION = "xai_image"
DEFAULT_MAX_MANIFEST_MIB = 256

#: The options of :data:`SECTION`, as the provider info declares them (this module imports nothing of
#: Airflow's when loaded: Airflow asks for the provider info while its configuration is being set up).
CONFIG_OPTIONS: dict[str, dict[str, Any]] = {
    "spool_dir": {
        "description": (
            "Folder where images wait, verified whole, until they are stored (one subfolder per "
            "task instance, removed once empty). It must be this user's own with mode 0700 (created "
            "so when missing); any other folder there is refused. Empty: "
            "<temp folder>/airflow-xai-image-<uid>."
        ),
        "version_added": "0.1.0",
        "type": "string",
        "example": "/var/spool/airflow-xai-image",
        "default": "",
    },
    "allowed_local_source_roots": {
        "description": (
            "Comma-separated folders that local (file://) source images of edits must be in, "
            "resolved with symbolic links and '..' first. Empty: any file the worker or triggerer "
            "can read (restrict it when DAGs take sources from dag_run.conf)."
        ),
        "version_added": "0.1.0",
        "type": "string",
        "example": "/data/edit-sources,/srv/shared/images",
        "default": "",
    },
    "gallery_allowed_roots": {
        "description": (
            "Comma-separated storage roots (URI prefixes, e.g. s3://aws_default@my-bucket/images/ or "
            "file:///data/images/) under which the xAI image gallery of the API server may read manifests "
            "and images. Empty: any location the API server's connections reach (each task instance still "
            "sees only the manifest in its own folder)."
        ),
        "version_added": "0.1.0",
        "type": "string",
        "example": "s3://aws_default@my-bucket/images/,file:///data/images/",
        "default": "",
    },
    "gallery_max_manifest_mib": {
        "description": (
            "The largest manifest.json (in MiB) the xAI image gallery reads; a larger one is refused. "
            "About 2,000 images take 1 MiB."
        ),
        "version_added": "0.1.0",
        "type": "integer",
        "example": "512",
        "default": str(DEFAULT_MAX_MANIFEST_MIB),
    },
}


def spool_root() -> str:
    """The spool root: ``spool_dir``, else ``<temp folder>/airflow-xai-image-<uid>``."""
    from airflow.providers.common.compat.sdk import conf

    configured = conf.get(SECTION, "spool_dir", fallback="") or ""
    return configured.strip() or os.path.join(tempfile.gettempdir(), f"airflow-xai-image-{os.geteuid()}")


def allowed_local_source_roots() -> list[str]:
    """The folders of ``allowed_local_source_roots``, resolved (empty: any folder)."""
    from airflow.providers.common.compat.sdk import conf

    configured = conf.get(SECTION, "allowed_local_source_roots", fallback="") or ""
    return [os.path.realpath(root.strip()) for root in configured.split(",") if root.strip()]


def allowed_roots() -> list[str]:
    """The roots of ``gallery_allowed_roots``, each ending with ``/`` (empty: any location)."""
    from airflow.providers.common.compat.sdk import conf

    value = conf.get(SECTION, "gallery_allowed_roots", fallback="") or ""
    return [root.strip().rstrip("/") + "/" for root in value.split(",") if root.strip()]


def max_manifest_bytes() -> int:
    """The cap of ``gallery_max_manifest_mib``, in bytes."""
    from airflow.providers.common.compat.sdk import conf

    return conf.getint(SECTION, "gallery_max_manifest_mib", fallback=DEFAULT_MAX_MANIFEST_MIB) * 1024 * 1024

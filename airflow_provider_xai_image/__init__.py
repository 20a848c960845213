"""Apache Airflow provider for xAI's Grok Imagine image models."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

PACKAGE_NAME = "airflow-provider-xai-image"


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""
    from airflow_provider_xai_image.connection import CONN_FIELDS, CONN_TYPE, UI_FIELD_BEHAVIOUR

    return {
        "package-name": PACKAGE_NAME,
        "name": "xAI Image",
        "description": "Generate and edit images with xAI's Grok Imagine models and store them in object storage.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": "xAI",
                "external-doc-url": "https://docs.x.ai/docs/guides/image-generations",
                "tags": ["software"],
            }
        ],
        "hooks": [{"integration-name": "xAI", "python-modules": ["airflow_provider_xai_image.hooks.xai"]}],
        "operators": [
            {
                "integration-name": "xAI",
                "python-modules": [
                    "airflow_provider_xai_image.operators.generate",
                    "airflow_provider_xai_image.operators.batch",
                ],
            }
        ],
        "sensors": [{"integration-name": "xAI", "python-modules": ["airflow_provider_xai_image.sensors.batch"]}],
        "triggers": [
            {
                "integration-name": "xAI",
                "python-modules": [
                    "airflow_provider_xai_image.triggers.generate",
                    "airflow_provider_xai_image.triggers.batch",
                ],
            }
        ],
        "config": {
            "xai_image": {
                "description": "Where the xAI image provider keeps images on local disk, and what it may read there.",
                "options": {
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
                },
            }
        },
        "connection-types": [
            {
                "connection-type": CONN_TYPE,
                "hook-class-name": "airflow_provider_xai_image.hooks.xai.XaiHook",
                "hook-name": "xAI",
                "conn-fields": CONN_FIELDS,
                "ui-field-behaviour": {
                    "hidden-fields": UI_FIELD_BEHAVIOUR["hidden_fields"],
                    "relabeling": UI_FIELD_BEHAVIOUR["relabeling"],
                    "placeholders": UI_FIELD_BEHAVIOUR["placeholders"],
                },
            }
        ],
    }

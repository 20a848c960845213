"""Apache Airflow provider for xAI's Grok Imagine image models."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

PACKAGE_NAME = "airflow-provider-xai-image"


def get_provider_info() -> dict[str, Any]:
    """Describe the provider to Airflow's ProvidersManager (entry point ``apache_airflow_provider``)."""
    from airflow_provider_xai_image.connection import CONN_FIELDS, CONN_TYPE, UI_FIELD_BEHAVIOUR
    from airflow_provider_xai_image.settings import CONFIG_OPTIONS, SECTION

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
        "config": {
            SECTION: {
                "description": (
                    "The xAI image provider: where images wait on local disk, which local sources edits may "
                    "read, and what the gallery in the Airflow UI may read."
                ),
                "options": CONFIG_OPTIONS,
            }
        },
    }

"""The auth manager of the gallery and review tests' API server: SimpleAuthManager, except that the users
:data:`OUTSIDER` and :data:`AUTHOR` may not read the DAG :data:`DENIED_DAG_ID` (any other DAG stays
readable, and editable by :data:`AUTHOR`).

The API server subprocess imports it as ``support.auth_manager.GalleryTestAuthManager`` (``tests/`` is
on its PYTHONPATH: see :func:`support.api_server.auth_manager_env`). ``XAI_TEST_DENIED_DAG_ID`` names another
DAG to deny instead.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails
from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager
from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

if TYPE_CHECKING:
    from airflow.api_fastapi.auth.managers.base_auth_manager import ResourceMethod

#: A viewer who may read every DAG but :data:`DENIED_DAG_ID`.
OUTSIDER = "outsider"
#: A user (who may edit DAGs, and so set XComs) of every DAG but :data:`DENIED_DAG_ID`.
AUTHOR = "author"
DENIED_DAG_ID = "xai_gallery_test"


class GalleryTestAuthManager(SimpleAuthManager):
    """SimpleAuthManager denying :data:`OUTSIDER` and :data:`AUTHOR` every access to :data:`DENIED_DAG_ID`."""

    def is_authorized_dag(
        self,
        *,
        method: ResourceMethod,
        user: SimpleAuthManagerUser,
        access_entity: DagAccessEntity | None = None,
        details: DagDetails | None = None,
    ) -> bool:
        """SimpleAuthManager's answer, but no for :data:`OUTSIDER` and :data:`AUTHOR` on :data:`DENIED_DAG_ID`.

        :param method: The HTTP method of the access.
        :param user: Who asks.
        :param access_entity: What of the DAG is accessed (runs, task instances, ...).
        :param details: Which DAG.
        """
        denied = os.environ.get("XAI_TEST_DENIED_DAG_ID", DENIED_DAG_ID)
        if user.username in (OUTSIDER, AUTHOR) and details is not None and details.id == denied:
            return False
        return super().is_authorized_dag(method=method, user=user, access_entity=access_entity, details=details)

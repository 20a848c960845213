"""The second DAG of the gallery tests, which every test user may read: task instances without images,
whose XCom ``manifest`` the tests set (as a DAG author or a user who may edit XComs could) to manifests
the gallery must not show, or to crafted ones it must show inertly and cheaply."""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, task

with DAG(dag_id="xai_gallery_open", schedule=None, start_date=datetime(2026, 1, 1), catchup=False):

    @task
    def pointer() -> None:
        """Its XCom ``manifest`` is pointed at the other DAG's manifest."""

    @task
    def elsewhere() -> None:
        """Its XCom ``manifest`` is pointed at a manifest of its own, outside its folder."""

    @task
    def hostile() -> None:
        """Its XCom ``manifest`` is pointed at a manifest with HTML in every text."""

    @task
    def large() -> None:
        """Its XCom ``manifest`` is pointed at a manifest of 150,000 images."""

    @task
    def legacy() -> None:
        """Its XCom ``manifest`` is pointed at a manifest that records no task instance."""

    pointer()
    elsewhere()
    hostile()
    large()
    legacy()

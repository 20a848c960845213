"""The image gallery in the Airflow UI: an Airflow plugin shipped with the provider.

* :mod:`~airflow_provider_xai_image.plugins.gallery_plugin`: the plugin (entry point ``airflow.plugins``):
  an "xAI images" tab on every task instance, and the FastAPI app behind it;
* :mod:`~airflow_provider_xai_image.plugins.gallery_app`: the app's routes and their access check;
* :mod:`~airflow_provider_xai_image.plugins.task_manifest`: one task instance's manifest (checked to be
  its own) and images;
* :mod:`~airflow_provider_xai_image.plugins.manifest_index`: a manifest streamed into an index on local
  disk, and the cache of the last few;
* :mod:`~airflow_provider_xai_image.plugins.gallery_page`: the HTML page.
"""

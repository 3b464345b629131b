"""The sitekb Airflow plugin: the Knowledge view in the UI and the listener that writes run notes.

- ``fastapi_apps``: the Knowledge app (:mod:`sitekb.orchestration.knowledge.app`),
  mounted in the API server at ``/sitekb``;
- ``external_views``: "Knowledge" in the navigation (``/sitekb/``) and as a tab
  of every DAG (``/sitekb/?dag_id=...``; a site DAG ``sitekb_<site>`` opens its site);
- ``listeners``: :mod:`sitekb.orchestration.listener`.

Registered once, through the ``airflow.plugins`` entry point of the installed
sitekb package (``pyproject.toml``). Airflow also scans its plugins folder
(this repository's ``plugins/`` when ``sitekb run --engine airflow`` starts
it), but ``plugins/.airflowignore`` keeps that scan out of ``sitekb/``, so this
file is never loaded a second time as a loose module.
"""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from sitekb.orchestration import listener
from sitekb.orchestration.knowledge.app import create_app

URL_PREFIX = "/sitekb"


class SitekbPlugin(AirflowPlugin):
    name = "sitekb"
    listeners = [listener]
    fastapi_apps = [{"app": create_app(), "url_prefix": URL_PREFIX, "name": "sitekb Knowledge view"}]
    external_views = [
        {"name": "Knowledge", "href": f"{URL_PREFIX}/", "url_route": "knowledge", "destination": "nav",
         "icon": f"{URL_PREFIX}/static/icon.svg"},
        {"name": "Knowledge", "href": f"{URL_PREFIX}/?dag_id={{DAG_ID}}", "url_route": "knowledge-dag",
         "destination": "dag", "icon": f"{URL_PREFIX}/static/icon.svg"},
    ]

"""Airflow listener: a sitekb DAG run that ends gets its run note (see :mod:`sitekb.orchestration.notes`).

Registered by the sitekb Airflow plugin (:mod:`sitekb.orchestration.plugin`);
it runs where Airflow decides a DAG run's final state (the scheduler, or the
process of ``airflow dags test``), so it sets ``dag_run.note`` on the very
object that state is written with.
"""

from __future__ import annotations

import logging

from airflow.listeners import hookimpl

log = logging.getLogger(__name__)


@hookimpl
def on_dag_run_success(dag_run, msg: str) -> None:
    _note(dag_run)


@hookimpl
def on_dag_run_failed(dag_run, msg: str) -> None:
    _note(dag_run)


def _note(dag_run) -> None:
    from sitekb.orchestration import notes

    try:
        text = notes.note_for(dag_run)
        if text:
            dag_run.note = text
    except Exception:  # noqa: BLE001 - a note must never break the scheduler
        log.exception("sitekb could not write the note of %s %s", dag_run.dag_id, dag_run.run_id)

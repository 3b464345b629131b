"""The note of a finished sitekb DAG run: the summary its ``report`` task left in XCom.

The ``report`` task (trigger rule all_done) writes the run's account from the
sitekb store (pages, exclusions by rule, quarantine, chunks, tokens and cost,
gate verdict, golden score, snapshot id, diff) and returns it; the listener
(:mod:`sitekb.orchestration.listener`) calls :func:`note_for` where Airflow
records the run's final state and sets it as the DAG run's note. A run whose
report task never ran (killed start) gets a note saying so.
"""

from __future__ import annotations

NOTE_LIMIT = 1000  # characters: Airflow keeps DAG run notes short


def note_for(dag_run) -> str | None:
    """The note for ``dag_run`` of a sitekb DAG, or None for other DAGs."""
    if not str(dag_run.dag_id).startswith("sitekb_"):
        return None
    from airflow.models.xcom import XComModel
    from sqlalchemy.orm import object_session

    session = object_session(dag_run)
    if session is None:
        return None
    query = XComModel.get_many(run_id=dag_run.run_id, dag_ids=dag_run.dag_id, task_ids="report",
                               key="return_value", limit=1)
    row = session.scalars(query).first()
    value = XComModel.deserialize_value(row) if row is not None else None
    if not isinstance(value, dict) or not value.get("note"):
        return f"sitekb: the run ended {dag_run.state} before its report; see the failed task's log"
    return shorten(str(value["note"]))


def shorten(note: str, limit: int = NOTE_LIMIT) -> str:
    """At most ``limit`` characters, cut at a line."""
    if len(note) <= limit:
        return note
    cut = note[: limit - 2].rsplit("\n", 1)[0]
    return cut + "\n…"

"""The Airflow corner: the only part of sitekb that imports ``airflow``.

- :mod:`~sitekb.orchestration.dag_factory`: a DAG ``sitekb_<site>`` per site
  file, from its ``airflow`` section (schedule, owner, tags, params, notifiers,
  deadline, approval); the DAG files in ``dags/`` only call it.
- :mod:`~sitekb.orchestration.tasks`: the task bodies, one per registered
  stage (:data:`sitekb.stages.STAGES`) plus the embedding plan and its mapped
  shards, the approval step and the report, each a few lines over
  :mod:`sitekb.engine`; sitekb's terminal errors become ``AirflowFailException``.
- :mod:`~sitekb.orchestration.batch` and :mod:`~sitekb.orchestration.triggers`:
  OpenAI's Batch API as a deferrable operator, so a 24 h job holds no worker slot.
- :mod:`~sitekb.orchestration.notify`: the site's notifiers (webhook, Slack,
  SMTP) and the freshness DeadlineAlert.
- :mod:`~sitekb.orchestration.notes` and :mod:`~sitekb.orchestration.listener`:
  the run's note, set when Airflow records its final state.
- :mod:`~sitekb.orchestration.plugin` and :mod:`~sitekb.orchestration.knowledge`:
  the Airflow plugin and its "Knowledge" view.
- :mod:`~sitekb.orchestration.settings`: a task's settings, the environment
  plus the Airflow connections ``sitekb_db`` and ``sitekb_openai``.
- :mod:`~sitekb.orchestration.runner` and :mod:`~sitekb.orchestration.naming`
  (no Airflow import): ``airflow dags test`` for ``sitekb run --engine airflow``,
  the local Airflow of ``make airflow``, and the names of DAGs, pools and Assets.

The rest of the library runs and is tested without Airflow installed (a test
imports every other module with ``airflow`` blocked).
"""

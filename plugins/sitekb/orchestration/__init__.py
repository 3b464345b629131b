"""The Airflow corner: the only part of sitekb that imports ``airflow``.

- :mod:`~sitekb.orchestration.tasks`: one Airflow task per registered stage
  (:data:`sitekb.stages.STAGES`), each a few lines over :mod:`sitekb.engine`;
  sitekb's terminal errors become ``AirflowFailException`` (fail, no retry).
- :mod:`~sitekb.orchestration.settings`: a task's settings, the environment
  plus the Airflow connections ``sitekb_db`` and ``sitekb_openai``.
- :mod:`~sitekb.orchestration.runner`: ``airflow dags test`` as a subprocess,
  for ``sitekb run --engine airflow`` and ``make run`` (it imports no Airflow itself).

The rest of the library runs and is tested without Airflow installed (a test
imports every other module with ``airflow`` blocked).
"""

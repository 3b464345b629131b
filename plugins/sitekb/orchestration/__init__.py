"""The Airflow corner: the only part of sitekb that imports ``airflow``.

Task bodies in ``dags/`` call :mod:`sitekb.orchestration.tasks`, which calls the
Airflow-free stages in :mod:`sitekb.pipeline` and maps sitekb's terminal
errors to ``AirflowFailException`` (fail, no retry).
"""

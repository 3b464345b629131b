"""The Knowledge view in the Airflow UI: the FastAPI app (:mod:`.app`) and its page (``static/``).

The sitekb plugin (:mod:`sitekb.orchestration.plugin`) mounts the app in
Airflow's API server at ``/sitekb`` and adds it to the navigation as
"Knowledge" (and as a tab of each DAG). Its reads are in
:mod:`sitekb.store.knowledge`; a rollback goes through
:func:`sitekb.store.snapshots.rollback` like the CLI's.
"""

"""The ``[core] hostname_callable`` of the distributed test's Airflow: each Celery worker names itself.

Both workers run on one machine, where :func:`socket.getfqdn` gives them the
same name. A task instance's ``hostname`` is what this callable returns in the
process that supervises the task (a child of the Celery worker), so each
worker is started with its own ``SITEKB_TEST_WORKER_HOSTNAME``; the other
Airflow processes (scheduler, API server) have none and get the FQDN.
"""

from __future__ import annotations

import os
import socket

VARIABLE = "SITEKB_TEST_WORKER_HOSTNAME"
CALLABLE = f"{__name__}.hostname"


def hostname() -> str:
    """This worker's name from the environment, else the machine's FQDN (Airflow's default)."""
    return os.environ.get(VARIABLE) or socket.getfqdn()

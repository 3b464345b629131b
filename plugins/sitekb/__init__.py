"""sitekb: turn a website into versioned, queryable knowledge snapshots for chatbots.

The core library. It imports no Airflow (only ``sitekb.orchestration`` does)
and no heavy dependency at import time.
"""

__version__ = "0.1.0"


def __getattr__(name: str):
    # Lazy so `import sitekb` stays cheap for DAG parsing.
    if name == "Client":
        from sitekb.client import Client

        return Client
    raise AttributeError(name)

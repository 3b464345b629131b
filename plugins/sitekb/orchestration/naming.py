"""The names sitekb gives things in Airflow (no Airflow import: the runner and the CLI use them too).

- a site's DAG: ``sitekb_<site>``;
- the pool every site's embed tasks to one provider share: ``sitekb_embed_<provider>``;
- the Asset a publish updates: ``sitekb://<site>/<alias>``.
"""

from __future__ import annotations

from pathlib import Path

from sitekb.errors import ConfigError
from sitekb.settings import Settings

# Slots of each pool when sitekb creates it: concurrent embed tasks across all sites and DAG runs.
POOLS: dict[str, tuple[int, str]] = {
    "sitekb_embed_local": (1, "sitekb: mapped embed tasks on the local model (CPU bound)"),
    "sitekb_embed_openai": (4, "sitekb: mapped embed tasks calling an OpenAI-compatible API (rate limits)"),
}


def dag_id(site: str) -> str:
    """The DAG of a site."""
    return f"sitekb_{site}"


def pool_name(provider: str) -> str:
    """The pool of the embedding calls to ``provider`` (``local`` or ``openai``)."""
    return f"sitekb_embed_{provider}"


def asset_uri(site: str, alias: str) -> str:
    """The Asset a publish of ``site`` to ``alias`` updates."""
    return f"sitekb://{site}/{alias}"


def site_dag_ids(settings: Settings) -> list[str]:
    """The DAG ids of every valid site file in the sites folder."""
    from sitekb.sites import load_site

    ids = []
    for path in sorted(Path(settings.sites_dir).glob("*.y*ml")):
        try:
            ids.append(dag_id(load_site(str(path), sites_dir=settings.sites_dir).name))
        except ConfigError:
            continue
    return ids

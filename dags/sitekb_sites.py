"""
### sitekb site DAGs

One Airflow DAG per site file: `dags/sites/<name>.yaml` (or `$SITEKB_SITES_DIR`)
becomes the DAG `sitekb_<name>`, scheduled, documented and alerted as its
`airflow:` section says (see `sitekb.orchestration.dag_factory`). Add a site:
add a file. A file that does not validate shows as an import error of
`sitekb_site_errors.py` naming the file and the field; the other sites' DAGs
load from here.
"""

from sitekb.orchestration.dag_factory import site_dags

# Airflow collects the DAG objects found at module level.
globals().update(site_dags().dags)

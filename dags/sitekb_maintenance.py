"""
### sitekb maintenance (an Airflow DAG)

Daily upkeep of the snapshot store (`sitekb.orchestration.maintenance`): every
site's live and newest snapshot whose delta segments and tombstones have grown
past 20% of its base (or 8 deltas) is compacted into one new base segment while
searches keep answering, and segments that no kept snapshot lists any more are
dropped. By hand: `sitekb snapshots compact --site S`.
"""

from sitekb.orchestration.maintenance import maintenance_dag

dag = maintenance_dag()

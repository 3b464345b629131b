"""The HTML report of a site (`sitekb report SITE`, ``GET /report/{site}`` of `sitekb serve`, and the Airflow
Knowledge view's "Report" link): :mod:`.page` builds it, :mod:`.charts` draws its SVG charts, :mod:`.verdict`
words each run's outcome, :mod:`.routes` serves it over HTTP."""

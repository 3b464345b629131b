"""The quality gate, one package: what is measured, what is expected, who judges, what is held back.

- :mod:`~sitekb.quality.measures`: pure functions, one number per check, per
  document and per batch (no database, no Great Expectations).
- :mod:`~sitekb.quality.duplicates`: exact and near duplicates across a crawl.
- :mod:`~sitekb.quality.injection`: text written to steer a chatbot (a measure
  of the safety checks; hidden text is found by :mod:`sitekb.extract`).
- :mod:`~sitekb.quality.checks`: one rule over one measured column, and a
  failure of it; :mod:`~sitekb.quality.suites`: the three suites as code,
  thresholds from the site config's ``quality`` section.
- :mod:`~sitekb.quality.runner`: validates a table of measures with Great
  Expectations (imported lazily, only there) and writes Data Docs; without it
  installed, the same checks are judged in plain Python.
- :mod:`~sitekb.quality.gate`: the gate of one run over the store, as the
  validate, chunk and evaluate stages call it.
- :mod:`~sitekb.quality.quarantine`: listing what was held back and approving
  a page anyway.
- :mod:`~sitekb.quality.golden`: the golden questions, checked against a
  snapshot's pages, asked of it and judged against the live one.

Imports run one way: injection and checks know nothing of the rest; measures
use injection; suites use measures and checks; the runner uses checks; gate,
quarantine and golden use everything and the store.
"""

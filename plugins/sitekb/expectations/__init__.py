"""The quality gate's Great Expectations suites, kept as code.

``suites`` says what is expected (one :class:`~sitekb.expectations.checks.Check`
per rule, thresholds from the site config's ``quality`` section); ``checks``
turns a rule into a Great Expectations expectation and can judge it in plain
Python; ``runner`` validates a table of measured values with an ephemeral
Great Expectations context and writes Data Docs.

Great Expectations is imported lazily, inside ``runner`` functions only: DAG
files and the CLI stay light.
"""

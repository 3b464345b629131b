"""The Scrapy project of sitekb: spiders route, parsers are pure functions.

It always runs in its own process (``python -m sitekb_crawlers.run``): the
Twisted reactor cannot restart inside a long-lived Airflow worker.
"""

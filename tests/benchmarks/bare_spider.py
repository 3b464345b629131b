"""The baseline of the crawl benchmark: a bare Scrapy spider that only fetches.

    python -m tests.benchmarks.bare_spider URLS.txt STATS.json CONCURRENCY

It requests every URL of the file once with Scrapy's defaults (robots.txt,
politeness delays, link extraction and item pipelines all off) and writes
pages, bytes and the seconds from spider open to close as JSON, measured as
``sitekb_crawlers.run`` measures the sitekb spider.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import scrapy
from scrapy.crawler import CrawlerProcess


class BareSpider(scrapy.Spider):
    name = "bare"

    def __init__(self, urls: list[str], **kwargs):
        super().__init__(**kwargs)
        self.urls = urls

    async def start(self):
        for url in self.urls:
            yield scrapy.Request(url, callback=self.parse)

    def parse(self, response):
        self.crawler.stats.inc_value("bare/pages")


def main(argv: list[str]) -> int:
    urls = Path(argv[0]).read_text().split()
    concurrency = int(argv[2])
    process = CrawlerProcess({
        "ROBOTSTXT_OBEY": False, "DOWNLOAD_DELAY": 0, "CONCURRENT_REQUESTS": concurrency,
        "CONCURRENT_REQUESTS_PER_DOMAIN": concurrency, "LOG_LEVEL": "ERROR", "TELNETCONSOLE_ENABLED": False,
        "COOKIES_ENABLED": False, "USER_AGENT": "bare-baseline/1.0 (+http://127.0.0.1/)",
        # The same Scrapy tuning as the sitekb crawler, so the comparison measures the spider.
        "CONCURRENT_ITEMS": 16,
    })
    crawler = process.create_crawler(BareSpider)
    started = time.monotonic()
    process.crawl(crawler, urls=urls)
    process.start()
    seconds = time.monotonic() - started
    stats = crawler.stats.get_stats()
    Path(argv[1]).write_text(json.dumps({
        "pages": stats.get("bare/pages", 0), "bytes": stats.get("downloader/response_bytes", 0),
        "requests": stats.get("downloader/request_count", 0), "seconds": round(seconds, 3),
        "crawl_seconds": stats.get("elapsed_time_seconds"),
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

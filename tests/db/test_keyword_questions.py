"""Keyword search reads a question as words, never as search operators.

Web-search syntax turned "a thinner or absent smooth layer" into "every other
word is required", and a question with a quote or a leading dash the same way:
on a public benchmark three such questions found nothing at all.
"""

from __future__ import annotations

import pytest

from tests.db.factory import Page, make_snapshot

PAGES = [
    Page("https://kw.example/vessels.html", "Blood vessels",
         ["Arterioles have a thick smooth muscle layer that controls their diameter."]),
    Page("https://kw.example/other.html", "Unrelated", ["Quarterly pipeline reviews happen on Mondays."]),
]


@pytest.mark.parametrize("question", [
    "Venules have a thinner or absent smooth layer compared to arterioles.",
    'What is the "smooth muscle" layer of venules?',
    "-smooth muscle layer of venules",
    "arterioles OR venules -diameter",
])
def test_a_question_with_or_quotes_or_a_dash_finds_the_page_that_shares_its_words(conn, question):
    make_snapshot(conn, "kw", PAGES, publish_as="production")
    rows = conn.execute("SELECT url FROM sitekb_api.search('kw', query => %s, mode => 'keyword', k => 2)",
                        (question,)).fetchall()
    assert rows and rows[0][0] == "https://kw.example/vessels.html", (question, rows)

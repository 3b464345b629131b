"""Every secret a message can carry is hidden by one function; what an operator needs stays."""

from __future__ import annotations

import pytest

from sitekb.redaction import redact


@pytest.mark.parametrize("text, secret, kept", [
    ("cannot connect to postgresql://kb:s3cr3t@db.internal:5432/sitekb", "s3cr3t", "postgresql://kb:***@db.internal:5432/sitekb"),
    ("server https://user:pa%40ss@vllm.example/v1 answered 503", "pa%40ss", "https://user:***@vllm.example/v1"),
    ("GET https://sk-proj-abcdefghijklmnop@api.example/v1", "sk-proj-abcdefghijklmnop", "https://***@api.example/v1"),
    ("postgresql://kb@db/sitekb?sslmode=require&password=hunter22", "hunter22", "sslmode=require&password=***"),
    ("https://hooks.example/x?token=abc123def&x=1", "abc123def", "token=***&x=1"),
    ("host=db user=kb password=hunter22 dbname=sitekb", "hunter22", "password=*** dbname=sitekb"),
    ("host=db password='with spaces' dbname=kb", "with spaces", "password=*** dbname=kb"),
    ("Authorization: Bearer eyJhbGciOiJIUzI1NiJ9.x.y", "eyJhbGciOiJIUzI1NiJ9", "Bearer ***"),
    ("the key sk-live-0123456789abcdefXYZ was refused", "0123456789abcdefXYZ", "sk-*** was refused"),
    ("https://api.example/v1?api_key=K1234567", "K1234567", "api_key=***"),
])
def test_a_secret_is_hidden_and_the_rest_kept(text, secret, kept):
    out = redact(text)
    assert secret not in out
    assert kept in out


def test_plain_text_and_plain_urls_are_untouched():
    for text in ("snapshot 12 of 'demo' was rejected: pages_drop: 60%", "https://www.example.com/pricing?page=2",
                 "postgresql://kb@127.0.0.1:5432/sitekb", "crawl.max_pages: Input should be greater than 0"):
        assert redact(text) == text

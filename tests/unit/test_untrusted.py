"""Bounded JSON parsing and Postgres-storable text for what crawled sites supply (no network, no DB)."""

from __future__ import annotations

import json

import pytest

from sitekb.untrusted import UntrustedJson, json_depth, load_json, storable, storable_value


def test_json_depth_counts_brackets_outside_strings():
    assert json_depth('{"a": "[[[\\" {", "b": [[1]], "c": {}}') == 3
    assert json_depth("1") == 0


def test_load_json_parses_ordinary_documents():
    assert load_json(b'\xef\xbb\xbf[{"location": "/"}]') == [{"location": "/"}]
    assert load_json(json.dumps({"a": [[[{"b": 1}]]]})) == {"a": [[[{"b": 1}]]]}


@pytest.mark.parametrize("text", ["[" * 10_000 + "]" * 10_000, '{"a":' * 65 + "1" + "}" * 65])
def test_load_json_refuses_deep_documents_without_recursion_error(text):
    with pytest.raises(UntrustedJson) as raised:
        load_json(text)
    assert raised.value.reason == "too_deep"


def test_load_json_refuses_large_documents_and_reports_broken_ones_as_value_errors():
    with pytest.raises(UntrustedJson) as raised:
        load_json("[" + "1," * 100 + "1]", max_bytes=100)
    assert raised.value.reason == "too_large"
    with pytest.raises(ValueError):
        load_json("{broken")


def test_storable_removes_nul_and_lone_surrogates_and_counts_them():
    assert storable("plain text") == ("plain text", 0)
    assert storable("a\x00b\ud800c\udfff") == ("abc", 3)
    assert storable("emoji \U0001F600 stays") == ("emoji \U0001F600 stays", 0)
    assert storable_value({"k\x00": ["v\x00", 1, None]}) == ({"k": ["v", 1, None]}, 2)

"""Exact and near-duplicate detection across a crawl, keeping the canonical copy."""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

from sitekb.quality.duplicates import Text, find_duplicates, shingle_hashes, signature, words
from sitekb.extract import extract_document

SITE = Path(__file__).resolve().parents[2] / "plugins" / "sitekb" / "demo" / "site"
BASE = "http://127.0.0.1:8765"


def demo_page(path: str) -> Text:
    doc = extract_document((SITE / path).read_text(encoding="utf-8"), f"{BASE}/{path}")
    assert doc is not None
    return Text(doc.url, doc.markdown, doc.canonical_url)


def prose(seed: int, sentences: int = 40) -> str:
    rng = random.Random(seed)
    subjects = ["the campaign team", "marketing operations", "every sales rep", "the web analyst", "our CRM admin"]
    verbs = ["reviews", "documents", "retires", "audits", "approves", "routes", "scores", "tags"]
    objects = ["the lead form", "each UTM parameter", "the nurture stream", "the renewal list", "webinar signups",
               "the attribution report", "duplicate contacts", "the pricing page", "bounced addresses"]
    when = ["every Monday", "before launch", "after each quarter", "within one business day", "when a rep leaves"]
    return " ".join(
        f"{rng.choice(subjects).capitalize()} {rng.choice(verbs)} {rng.choice(objects)} {rng.choice(when)}."
        for _ in range(sentences)
    )


def test_the_demo_syndicated_copy_is_a_near_duplicate_of_its_original():
    original = demo_page("articles/utm-governance.html")
    syndicated = demo_page("articles/utm-governance-syndicated.html")
    other = demo_page("articles/lead-routing-rules.html")
    found = find_duplicates([syndicated, original, other], threshold=0.7)
    assert set(found) == {syndicated.url}
    dup = found[syndicated.url]
    assert dup.of == original.url and not dup.exact
    assert 0.7 <= dup.similarity < 1.0


def test_a_crafted_near_duplicate_pair_keeps_the_canonical_target():
    text = prose(1)
    tokens = text.split()
    tokens[40], tokens[120] = "quietly", "rarely"  # two words changed
    copy = "Originally published on the partner blog. A new intro for this audience. " + " ".join(tokens)
    # The copy has the shorter URL, but it names the original as canonical: the original is kept.
    docs = [Text("https://x.org/a/copy", copy, "https://x.org/articles/the-original"),
            Text("https://x.org/articles/the-original", text)]
    found = find_duplicates(docs, threshold=0.7)
    assert list(found) == ["https://x.org/a/copy"]
    assert found["https://x.org/a/copy"].of == "https://x.org/articles/the-original"


def test_without_canonical_hints_the_shorter_url_is_kept():
    text = prose(2)
    docs = [Text("https://x.org/blog/2024/05/post", text), Text("https://x.org/post", text),
            Text("https://x.org/print/post", text)]
    found = find_duplicates(docs)
    assert set(found) == {"https://x.org/blog/2024/05/post", "https://x.org/print/post"}
    assert all(d.of == "https://x.org/post" and d.exact and d.similarity == 1.0 for d in found.values())


def test_exact_duplicates_ignore_case_whitespace_and_markup():
    text = prose(3)
    found = find_duplicates([Text("https://x.org/a", text), Text("https://x.org/b", "# " + text.upper() + "\n\n")])
    assert found["https://x.org/b"].exact


def test_different_pages_on_the_same_template_are_not_duplicates():
    docs = [Text(f"https://x.org/p{i}", prose(100 + i)) for i in range(30)]
    assert find_duplicates(docs, threshold=0.7) == {}


def test_half_overlap_is_below_the_threshold():
    a, b = prose(7).split(), prose(8).split()
    half = " ".join(a[: len(a) // 2] + b[len(b) // 2 :])
    found = find_duplicates([Text("https://x.org/a", " ".join(a)), Text("https://x.org/half", half)], threshold=0.7)
    assert found == {}
    lower = find_duplicates([Text("https://x.org/a", " ".join(a)), Text("https://x.org/half", half)], threshold=0.3)
    assert set(lower) == {"https://x.org/half"}


def test_a_cluster_of_copies_keeps_one():
    text = prose(9)
    variants = [text + f" Extra closing line number {i}." for i in range(5)]
    found = find_duplicates([Text(f"https://x.org/copy-{i}", v) for i, v in enumerate(variants)])
    assert len(found) == 4 and {d.of for d in found.values()} == {"https://x.org/copy-0"}


@pytest.mark.parametrize("text", ["", "one", "two words here"])
def test_short_texts_hash_as_one_shingle(text: str):
    assert len(shingle_hashes(words(text))) == (1 if text else 0)


def test_stored_signatures_find_what_hashing_the_texts_finds():
    docs = [demo_page("articles/utm-governance-syndicated.html"), demo_page("articles/utm-governance.html"),
            demo_page("articles/lead-routing-rules.html"), Text("https://x.org/copy", prose(3)),
            Text("https://x.org/copy-2", prose(3)), Text("https://x.org/other", prose(4))]
    signatures: dict[str, bytes] = {}
    hashed = find_duplicates(docs, threshold=0.7, signatures=signatures)
    assert set(signatures) == {d.url for d in docs}
    assert signatures["https://x.org/copy"] == signature(prose(3)) != signature(prose(4))
    # The stored signatures stand in for the texts: only candidate pairs read their words.
    reread = [dataclasses.replace(d, signature=signatures[d.url]) for d in docs]
    again: dict[str, bytes] = {}
    assert find_duplicates(reread, threshold=0.7, signatures=again) == hashed
    assert again == signatures
    assert set(hashed) == {"https://x.org/copy-2", docs[0].url}


def test_a_signature_of_another_recipe_is_made_again():
    text = prose(5)
    other = signature(text, num_perm=64)
    made: dict[str, bytes] = {}
    find_duplicates([Text("https://x.org/a", text, signature=other), Text("https://x.org/b", prose(6))],
                    signatures=made)
    assert made["https://x.org/a"] == signature(text) != other
    truncated: dict[str, bytes] = {}
    find_duplicates([Text("https://x.org/a", text, signature=signature(text)[:-4])], signatures=truncated)
    assert truncated["https://x.org/a"] == signature(text)

"""Unit tests for sitekb.chunking with the real tokenizers (cl100k and all-MiniLM-L6-v2)."""

from __future__ import annotations

import pytest

from sitekb.chunking import (
    CHUNKER_VERSION,
    DEFAULT_TEMPLATE,
    Chunk,
    ChunkingConfig,
    chunk_document,
)
from sitekb.tokenization import Tokenizer, get_tokenizer

URL = "https://example.org/guide"
PROVIDERS = [("openai", "text-embedding-3-small"), ("local", "all-MiniLM-L6-v2")]


@pytest.fixture(params=PROVIDERS, ids=[p for p, _ in PROVIDERS])
def tokenizer(request: pytest.FixtureRequest) -> Tokenizer:
    return get_tokenizer(*request.param)


def _assert_within_limits(chunks: list[Chunk], tokenizer: Tokenizer, config: ChunkingConfig) -> None:
    assert chunks
    for chunk in chunks:
        recount = tokenizer.count(chunk.embed_text) + tokenizer.special_tokens
        assert chunk.token_count == recount
        assert chunk.token_count <= config.max_tokens, chunk
        assert chunk.text.strip()
        assert chunk.text in chunk.embed_text
    assert [c.seq for c in chunks] == list(range(len(chunks)))


def _paragraph(seed: int, sentences: int = 4) -> str:
    words = ["tide", "pool", "algae", "barnacle", "rock", "shore", "oxygen", "snail", "kelp", "crab"]
    out = []
    for s in range(sentences):
        body = " ".join(words[(seed * 7 + s * 3 + i) % len(words)] for i in range(12))
        out.append(f"Sentence {seed}.{s} says the {body}.")
    return " ".join(out)


# --- structure -----------------------------------------------------------------


STRUCTURED = """Intro text before any heading.

# Guide

Guide intro paragraph.

## Setup

Setup paragraph.

### Linux

Linux paragraph.

```bash
# this is a shell comment, not a heading
make install
```

## Usage ##

Usage paragraph.

#### Deep

Deep paragraph.

# Appendix

Appendix paragraph.
"""


def test_heading_paths(tokenizer: Tokenizer) -> None:
    chunks = chunk_document(
        STRUCTURED, url=URL, title="Guide", tokenizer=tokenizer, config=ChunkingConfig(target_tokens=20, max_tokens=64)
    )
    by_text = {c.text.split("\n")[0]: c.heading_path for c in chunks}
    assert by_text["Intro text before any heading."] == ()
    assert by_text["Guide intro paragraph."] == ("Guide",)
    assert by_text["Setup paragraph."] == ("Guide", "Setup")
    assert by_text["Linux paragraph."] == ("Guide", "Setup", "Linux")
    assert by_text["Usage paragraph."] == ("Guide", "Usage")  # closing '##' stripped, h3 popped
    assert by_text["Deep paragraph."] == ("Guide", "Usage", "Deep")
    assert by_text["Appendix paragraph."] == ("Appendix",)
    code = next(c for c in chunks if "make install" in c.text)
    assert code.heading_path == ("Guide", "Setup", "Linux")
    assert "# this is a shell comment, not a heading" in code.text
    _assert_within_limits(chunks, tokenizer, ChunkingConfig(target_tokens=20, max_tokens=64))


def test_embed_text_uses_template_and_skips_title_repeated_as_h1(tokenizer: Tokenizer) -> None:
    chunks = chunk_document(STRUCTURED, url=URL, title="Guide", tokenizer=tokenizer)
    linux = next(c for c in chunks if c.heading_path == ("Guide", "Setup", "Linux"))
    assert linux.embed_text.startswith("Guide\nSetup > Linux\n\n")
    assert linux.embed_text.endswith(linux.text)
    intro = next(c for c in chunks if c.heading_path == ())
    assert intro.embed_text.startswith("Guide\n\nIntro text")  # no empty heading line
    appendix = next(c for c in chunks if c.heading_path == ("Appendix",))
    assert appendix.embed_text.startswith("Guide\nAppendix\n\n")

    untitled = chunk_document("## Only\n\nBody text.", url=URL, title=None, tokenizer=tokenizer)
    assert untitled[0].embed_text == "Only\n\nBody text."
    custom = ChunkingConfig(template="passage: {text}")
    assert chunk_document("# A\n\nBody.", url=URL, title="T", tokenizer=tokenizer, config=custom)[0].embed_text == "passage: Body."


def test_small_blocks_are_packed_and_blocks_kept_intact(tokenizer: Tokenizer) -> None:
    table = "| Time | Oxygen |\n|---|---|\n| Noon | High |\n| Midnight | Low |"
    md = "# Doc\n\nFirst short paragraph.\n\n- item one\n- item two\n\n" + table + "\n\nLast paragraph."
    chunks = chunk_document(md, url=URL, title="Doc", tokenizer=tokenizer)
    assert len(chunks) == 1
    assert chunks[0].text == "First short paragraph.\n\n- item one\n- item two\n\n" + table + "\n\nLast paragraph."


def test_code_fence_without_blank_line_after_is_its_own_block(tokenizer: Tokenizer) -> None:
    md = "# Doc\n\n```\nprint(1)\n```\nText right after the fence."
    chunks = chunk_document(md, url=URL, title=None, tokenizer=tokenizer)
    assert chunks[0].text == "```\nprint(1)\n```\n\nText right after the fence."


# --- hard limit ----------------------------------------------------------------

LIMIT_CASES = {
    "long-paragraphs": "# Long\n\n" + "\n\n".join(_paragraph(i, sentences=40) for i in range(3)),
    "one-sentence-no-punctuation": "# Run-on\n\n" + " ".join(f"word{i}" for i in range(4000)),
    "giant-word": "# Word\n\nBefore. " + "".join(chr(0x61 + (i * 7) % 26) for i in range(5000)) + " after.",
    "code-block": "# Code\n\n```python\n"
    + "\n".join(f"    result_{i} = compute_value({i}, factor={i * 3})  # step {i}" for i in range(600))
    + "\n```",
    "table": "# Table\n\n| Name | Description | Value |\n|---|---|---|\n"
    + "\n".join(f"| item {i} | the description of item number {i} in the list | {i * 1.5} |" for i in range(800)),
    "giant-table-row": "# Row\n\n| A | B |\n|---|---|\n| " + " ".join(f"cell{i}" for i in range(2000)) + " | x |",
    "cjk": "# 潮だまり\n\n" + "潮だまりは干潮時に岩場に残る小さな海水のたまりです。" * 300,
    "emoji-and-accents": "# Émojis\n\n" + "🌊🦀🐚 café naïve façade " * 600,
}


@pytest.mark.parametrize("case", sorted(LIMIT_CASES))
@pytest.mark.parametrize(
    "config",
    [ChunkingConfig(), ChunkingConfig(target_tokens=48, max_tokens=64), ChunkingConfig(target_tokens=100, overlap_tokens=20, max_tokens=128)],
    ids=["default", "tiny", "overlap"],
)
def test_max_tokens_is_never_exceeded(tokenizer: Tokenizer, case: str, config: ChunkingConfig) -> None:
    chunks = chunk_document(LIMIT_CASES[case], url=URL, title="A page title that takes some tokens", tokenizer=tokenizer, config=config)
    _assert_within_limits(chunks, tokenizer, config)
    if config.overlap_tokens == 0:
        assert len(chunks) > 1 or tokenizer.count(LIMIT_CASES[case]) < config.max_tokens


def test_giant_word_is_split_by_characters_without_loss() -> None:
    tok = get_tokenizer("openai", "text-embedding-3-small")
    word = "".join(chr(0x61 + (i * 7) % 26) for i in range(5000))
    config = ChunkingConfig()
    chunks = chunk_document(f"# W\n\n{word}", url=URL, title="T", tokenizer=tok, config=config)
    assert len(chunks) > 1
    assert "".join(c.text for c in chunks) == word
    _assert_within_limits(chunks, tok, config)


def test_big_code_block_pieces_stay_fenced(tokenizer: Tokenizer) -> None:
    config = ChunkingConfig(target_tokens=120, max_tokens=160)
    chunks = chunk_document(LIMIT_CASES["code-block"], url=URL, title="T", tokenizer=tokenizer, config=config)
    assert len(chunks) > 3
    for chunk in chunks:
        assert chunk.text.startswith("```python\n") and chunk.text.endswith("\n```")
    body = "\n".join(c.text.removeprefix("```python\n").removesuffix("\n```") for c in chunks)
    assert body == LIMIT_CASES["code-block"].split("```python\n")[1].removesuffix("\n```")


def test_big_table_pieces_repeat_the_header(tokenizer: Tokenizer) -> None:
    config = ChunkingConfig(target_tokens=120, max_tokens=160)
    chunks = chunk_document(LIMIT_CASES["table"], url=URL, title="T", tokenizer=tokenizer, config=config)
    assert len(chunks) > 3
    rows = []
    for chunk in chunks:
        lines = chunk.text.split("\n")
        assert lines[:2] == ["| Name | Description | Value |", "|---|---|---|"]
        rows += lines[2:]
    assert rows == LIMIT_CASES["table"].split("\n")[4:]
    _assert_within_limits(chunks, tokenizer, config)


def test_oversized_paragraph_splits_at_sentences(tokenizer: Tokenizer) -> None:
    config = ChunkingConfig(target_tokens=80, max_tokens=100)
    chunks = chunk_document("# P\n\n" + _paragraph(1, sentences=30), url=URL, title="T", tokenizer=tokenizer, config=config)
    assert len(chunks) > 2
    for chunk in chunks:
        assert chunk.text.startswith("Sentence ") and chunk.text.endswith(".")


def test_overlap_repeats_the_previous_tail(tokenizer: Tokenizer) -> None:
    md = "# O\n\n" + "\n\n".join(_paragraph(i, sentences=2) for i in range(12))
    config = ChunkingConfig(target_tokens=90, overlap_tokens=15, max_tokens=128)
    plain = chunk_document(md, url=URL, title="T", tokenizer=tokenizer, config=ChunkingConfig(target_tokens=90, max_tokens=128))
    chunks = chunk_document(md, url=URL, title="T", tokenizer=tokenizer, config=config)
    _assert_within_limits(chunks, tokenizer, config)
    assert len(chunks) == len(plain) > 2
    for before, after, own in zip(plain, chunks[1:], plain[1:]):
        tail = after.text.removesuffix(own.text).strip()
        assert tail and before.text.endswith(tail)
        assert tokenizer.count(tail) <= config.overlap_tokens
    assert chunks[0].text == plain[0].text


def test_long_title_and_headings_are_shortened_not_fatal(tokenizer: Tokenizer) -> None:
    long = " ".join(f"heading{i}" for i in range(300))
    md = f"# {long}\n\n## {long}\n\n### short\n\n" + _paragraph(3, sentences=20)
    config = ChunkingConfig(target_tokens=100, max_tokens=128)
    chunks = chunk_document(md, url=URL, title=long, tokenizer=tokenizer, config=config)
    _assert_within_limits(chunks, tokenizer, config)
    assert chunks[0].heading_path == (long, long, "short")  # metadata keeps the full path
    assert "…" in chunks[0].embed_text


# --- ids -------------------------------------------------------------------------


def _ten_sections(edit: bool = False) -> str:
    sections = []
    for s in range(10):
        paragraphs = [_paragraph(s * 10 + p, sentences=3) for p in range(4)]
        if edit and s == 4:
            paragraphs[1] = paragraphs[1].replace("kelp", "weed", 1)
        sections.append(f"## Section {s}\n\n" + "\n\n".join(paragraphs))
    return "# Doc\n\n" + "\n\n".join(sections)


def test_editing_one_paragraph_changes_only_chunks_holding_it(tokenizer: Tokenizer) -> None:
    config = ChunkingConfig(target_tokens=120, max_tokens=160)
    old_md, new_md = _ten_sections(), _ten_sections(edit=True)
    old_para = _paragraph(41, sentences=3)
    new_para = old_para.replace("kelp", "weed", 1)
    assert old_para != new_para and old_para in old_md and new_para in new_md
    old = chunk_document(old_md, url=URL, title="Doc", tokenizer=tokenizer, config=config)
    new = chunk_document(new_md, url=URL, title="Doc", tokenizer=tokenizer, config=config)
    assert len({c.heading_path for c in old}) == 10 and len(old) > 10

    old_ids, new_ids = {c.chunk_id for c in old}, {c.chunk_id for c in new}
    holding_old = {c.chunk_id for c in old if old_para in c.text}
    holding_new = {c.chunk_id for c in new if new_para in c.text}
    assert holding_old and holding_new
    assert old_ids - new_ids == holding_old
    assert new_ids - old_ids == holding_new


def test_ids_are_deterministic_and_content_derived(tokenizer: Tokenizer) -> None:
    md = _ten_sections()
    first = chunk_document(md, url=URL, title="Doc", tokenizer=tokenizer)
    assert first == chunk_document(md, url=URL, title="Doc", tokenizer=tokenizer)
    assert all(len(c.chunk_id) == 32 and int(c.chunk_id, 16) >= 0 for c in first)
    assert len({c.chunk_id for c in first}) == len(first)
    other_url = chunk_document(md, url=URL + "/other", title="Doc", tokenizer=tokenizer)
    assert not {c.chunk_id for c in first} & {c.chunk_id for c in other_url}
    # Adding a section in front shifts seq but keeps every existing id.
    shifted = chunk_document("## New first\n\nBrand new text.\n\n" + md, url=URL, title="Doc", tokenizer=tokenizer)
    assert {c.chunk_id for c in first} <= {c.chunk_id for c in shifted}


def test_repeated_text_under_same_heading_gets_distinct_ids(tokenizer: Tokenizer) -> None:
    md = "## FAQ\n\n" + _paragraph(1, sentences=12) + "\n\n## FAQ\n\n" + _paragraph(1, sentences=12)
    chunks = chunk_document(md, url=URL, title=None, tokenizer=tokenizer, config=ChunkingConfig(target_tokens=100, max_tokens=128))
    assert len({c.chunk_id for c in chunks}) == len(chunks)


# --- edge cases and config -------------------------------------------------------


@pytest.mark.parametrize("markdown", ["", "   ", "\n\n\t\n", "# Only a heading", "# A\n\n## B\n"])
def test_no_text_gives_no_chunks(tokenizer: Tokenizer, markdown: str) -> None:
    assert chunk_document(markdown, url=URL, title="T", tokenizer=tokenizer) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"overlap_tokens": 200}, "overlap_tokens"),
        ({"overlap_tokens": -1}, "overlap_tokens"),
        ({"target_tokens": 300}, "target_tokens"),
        ({"target_tokens": 0}, "target_tokens"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"template": "{title}\n{heading_path}"}, "exactly once"),
        ({"template": "{text} {text}"}, "exactly once"),
        ({"template": "{url}: {text}"}, "unknown fields"),
        ({"template": "{text"}, "malformed"),
    ],
)
def test_bad_config_raises_value_error(kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        ChunkingConfig(**kwargs)  # type: ignore[arg-type]


def test_template_overhead_above_max_raises(tokenizer: Tokenizer) -> None:
    config = ChunkingConfig(target_tokens=40, max_tokens=64, template="word " * 80 + "{text}")
    with pytest.raises(ValueError, match="template alone takes"):
        chunk_document("# A\n\nBody.", url=URL, title="T", tokenizer=tokenizer, config=config)


def test_constants() -> None:
    assert CHUNKER_VERSION == "sitekb-chunker/1"
    assert DEFAULT_TEMPLATE == "{title}\n{heading_path}\n\n{text}"

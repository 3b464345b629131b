"""Exact and near-duplicate documents across one crawl, keeping the canonical copy.

Exact duplicates share the same normalized word sequence. Near duplicates are
found with MinHash over 5-word shingles and a MinHash LSH index (datasketch):
each document is hashed once and queried once against the index, so the work
grows with the number of documents, not with the number of pairs. Candidate
pairs from the index (tuned a little below the threshold, for recall) are
confirmed with the exact Jaccard similarity of their shingle sets against the
configured threshold (``quality.near_duplicate_threshold``).

A document's signature (:func:`signature`: the hash of its normalized words and
its MinHash values) depends on its text alone: the validate stage stores it with
the document, and a later run whose document has the same text passes it back
(``Text.signature``), so an unchanged page is not hashed again; only candidate
pairs need their shingles, computed when they come up.

Connected documents form a cluster; the cluster keeps one canonical copy:
the document the others name as their ``rel=canonical`` target, else one that
passes the other document checks, else one that names itself, else the
shortest URL (then the alphabetically first). Every
other member is reported with the copy it duplicates and how similar it is.
"""

from __future__ import annotations

import functools
import hashlib
import re
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

import numpy as np

SHINGLE_WORDS = 5
NUM_PERM = 128
LSH_MARGIN = 0.15
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
# Odd 32-bit multiplier for the rolling shingle hash (any odd constant works).
_MULTIPLIER = np.uint64(0x9E3779B1)
_MASK32 = np.uint64(0xFFFFFFFF)


@dataclass(frozen=True)
class Text:
    """What dedup needs of a document."""

    url: str
    text: str
    canonical_url: str | None = None
    # False when the document fails other checks: a healthy copy is kept over a damaged one.
    healthy: bool = True
    # The stored :func:`signature` of this very text, when an earlier run computed it.
    signature: bytes | None = None


@dataclass(frozen=True)
class Duplicate:
    """``url`` repeats ``of`` (the kept copy), with the estimated Jaccard similarity."""

    url: str
    of: str
    similarity: float
    exact: bool


def _normalize_url(url: str | None) -> str | None:
    if not url:
        return None
    parts = urlsplit(url)
    return urlunsplit((parts.scheme.lower(), parts.netloc.lower(), parts.path or "/", parts.query, ""))


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


class _WordHashes(dict):
    """crc32 of each distinct word, computed once per corpus (words repeat a lot)."""

    def __missing__(self, word: str) -> int:
        value = self[word] = zlib.crc32(word.encode("utf-8"))
        return value


def shingle_hashes(tokens: Sequence[str], size: int = SHINGLE_WORDS, word_hashes: dict | None = None) -> np.ndarray:
    """32-bit hashes of every run of ``size`` words (the whole text when shorter), sorted and unique."""
    if not tokens:
        return np.zeros(0, dtype=np.uint64)
    cache = word_hashes if word_hashes is not None else _WordHashes()
    # One hash per word, then a polynomial rolling combination in numpy: no
    # Python-level work per shingle.
    hashed = np.fromiter(map(cache.__getitem__, tokens), dtype=np.uint64, count=len(tokens))
    span = min(size, len(tokens))
    count = len(tokens) - span + 1
    combined = np.zeros(count, dtype=np.uint64)
    for offset in range(span):
        combined = (combined * _MULTIPLIER + hashed[offset : offset + count]) & _MASK32
    return np.unique(combined)


@functools.lru_cache(maxsize=4)
def _permutations(num_perm: int):
    from datasketch import MinHash

    return MinHash(num_perm=num_perm, seed=1).permutations


def _minhash(hashes: np.ndarray, num_perm: int):
    from datasketch import MinHash

    # Reusing the permutations saves drawing num_perm random pairs per document.
    signature = MinHash(num_perm=num_perm, hashfunc=int, permutations=_permutations(num_perm), scheme="affine32")
    if len(hashes):
        signature.update_batch(hashes.tolist())
    return signature


# A signature's header: format, permutations, shingle words (a stored one of another recipe is recomputed).
_HEADER = struct.Struct("<BHB")
_FORMAT = 1


def signature(text: str, *, num_perm: int = NUM_PERM, shingle_words: int = SHINGLE_WORDS,
              word_hashes: dict | None = None) -> bytes:
    """What dedup needs of a text, to store with it: the sha256 of its normalized words and its MinHash values."""
    tokens = words(text)
    exact = hashlib.sha256(" ".join(tokens).encode("utf-8")).digest()
    values = _minhash(shingle_hashes(tokens, shingle_words, word_hashes), num_perm).hashvalues
    return _HEADER.pack(_FORMAT, num_perm, shingle_words) + exact + values.astype("<u4").tobytes()


def _read(stored: bytes | None, num_perm: int, shingle_words: int) -> tuple[bytes, np.ndarray] | None:
    """(exact key, MinHash values) of a stored signature made by this recipe, else None."""
    if not stored or len(stored) != _HEADER.size + 32 + 4 * num_perm:
        return None
    if _HEADER.unpack_from(stored) != (_FORMAT, num_perm, shingle_words):
        return None
    body = memoryview(stored)[_HEADER.size:]
    return bytes(body[:32]), np.frombuffer(body[32:], dtype="<u4").astype(np.uint32)


class _Clusters:
    """Union-find over document indexes."""

    def __init__(self, size: int) -> None:
        self.parent = list(range(size))

    def find(self, i: int) -> int:
        while self.parent[i] != i:
            self.parent[i] = self.parent[self.parent[i]]
            i = self.parent[i]
        return i

    def union(self, a: int, b: int) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:
            self.parent[max(ra, rb)] = min(ra, rb)


def _canonical(members: list[int], docs: Sequence[Text]) -> int:
    urls = {i: _normalize_url(docs[i].url) for i in members}
    targets = {_normalize_url(docs[i].canonical_url) for i in members if docs[i].canonical_url}

    def rank(i: int) -> tuple:
        named_by_others = urls[i] in targets
        names_itself = _normalize_url(docs[i].canonical_url) == urls[i]
        return (not named_by_others, not docs[i].healthy, not names_itself, len(docs[i].url), docs[i].url)

    return min(members, key=rank)


def find_duplicates(docs: Sequence[Text], threshold: float = 0.8, *, num_perm: int = NUM_PERM,
                    shingle_words: int = SHINGLE_WORDS, signatures: dict[str, bytes] | None = None
                    ) -> dict[str, Duplicate]:
    """Every document that repeats another one, keyed by URL; canonical copies are absent.

    ``signatures``: filled with each document's :func:`signature` by URL (those passed in
    ``Text.signature`` included), for the caller to store.
    """
    from datasketch import MinHash, MinHashLSH

    word_hashes = _WordHashes()
    tokens: dict[int, list[str]] = {}
    shingles: dict[int, np.ndarray] = {}

    def tokens_of(i: int) -> list[str]:
        if i not in tokens:
            tokens[i] = words(docs[i].text)
        return tokens[i]

    def shingles_of(i: int) -> np.ndarray:
        if i not in shingles:
            shingles[i] = shingle_hashes(tokens_of(i), shingle_words, word_hashes)
        return shingles[i]

    keys: list[bytes] = []
    values: list[np.ndarray] = []
    for i, doc in enumerate(docs):
        known = _read(doc.signature, num_perm, shingle_words)
        if known is None:
            stored = signature(doc.text, num_perm=num_perm, shingle_words=shingle_words, word_hashes=word_hashes)
            known = _read(stored, num_perm, shingle_words)
        else:
            stored = doc.signature
        if signatures is not None:
            signatures[doc.url] = stored
        keys.append(known[0])
        values.append(known[1])

    clusters = _Clusters(len(docs))
    exact_group: dict[bytes, int] = {}
    representatives: list[int] = []
    for i, key in enumerate(keys):
        first = exact_group.setdefault(key, i)
        if first != i:
            clusters.union(first, i)
        else:
            representatives.append(i)

    if threshold < 1.0 and len(representatives) > 1:
        # The index runs a little below the threshold so that pairs near it still
        # become candidates despite MinHash's estimation error; each candidate is
        # then confirmed with its exact shingle Jaccard.
        lsh = MinHashLSH(threshold=max(0.05, threshold - LSH_MARGIN), num_perm=num_perm)
        permutations = _permutations(num_perm)
        for i in representatives:
            minhash = MinHash(num_perm=num_perm, hashfunc=int, permutations=permutations, scheme="affine32",
                              hashvalues=values[i])
            for other in lsh.query(minhash):
                if jaccard(shingles_of(i), shingles_of(other)) >= threshold:
                    clusters.union(other, i)
            lsh.insert(i, minhash)

    groups: dict[int, list[int]] = {}
    for i in range(len(docs)):
        groups.setdefault(clusters.find(i), []).append(i)
    result: dict[str, Duplicate] = {}
    for members in groups.values():
        if len(members) < 2:
            continue
        keep = _canonical(members, docs)
        for i in members:
            if i == keep:
                continue
            exact = keys[i] == keys[keep]
            similarity = 1.0 if exact else round(jaccard(shingles_of(i), shingles_of(keep)), 4)
            result[docs[i].url] = Duplicate(docs[i].url, docs[keep].url, similarity, exact)
    return result


def jaccard(a: np.ndarray, b: np.ndarray) -> float:
    """Exact Jaccard similarity of two sorted, unique shingle-hash arrays."""
    if not len(a) and not len(b):
        return 1.0
    shared = len(np.intersect1d(a, b, assume_unique=True))
    return shared / (len(a) + len(b) - shared)

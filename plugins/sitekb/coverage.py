"""Coverage of a snapshot: which parts of the site its chunks come from, and what they are about.

Per snapshot, the share of its chunks

- per **section**: the URL's first path segment when the page lies below one
  (``/blog/``, ``/docs/``), else ``/`` (pages at the root, the home page);
- per **tag** (a page may have several: shares may add up to more than 1) and
  per **language**;
- per **topic cluster**: the chunk vectors grouped by a small spherical
  k-means (``k = min(8, round(sqrt(n / 2)))``, k-means++ seeded, so the same
  snapshot always gives the same clusters), each labelled by its most
  distinctive words (class-based tf-idf over the texts, titles and headings of
  its chunks: "pricing / plans / seats", not "cluster 3") and its most
  common page titles.

Bounded for large snapshots: the clusters are fitted on at most
:data:`FIT_SAMPLE` chunks (a fixed sample, :func:`sitekb.store.coverage.sample`)
and every chunk is then counted to its nearest centroid in SQL.

A section holding more than the site's ``coverage.max_section_share``
(default 0.6) is a **warning**, never a rejection: a bot trained on one
corner of a site answers from that corner (an echo chamber). The warning is
stored with the record and shown in the run summary, the run note and the
HTML report.

The build stage computes and stores the record (:func:`refresh`);
``sitekb coverage`` reads it (and computes it for a snapshot built before).
Settings read (passed in): the site config's ``coverage.max_section_share``.
"""

from __future__ import annotations

import logging
import math
import re
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

import numpy as np
import psycopg

from sitekb.errors import NotFound
from sitekb.store import coverage as store

log = logging.getLogger(__name__)

DEFAULT_MAX_SECTION_SHARE = 0.6
MAX_CLUSTERS = 8
FIT_SAMPLE = 5000
SEED = 15
ITERATIONS = 40
LABEL_TERMS = 3
VERSION = 1

# Words that say nothing about a topic: English function words and the furniture of web pages.
STOPWORDS = frozenset("""
a about above after again against all also am an and any are aren't as at be because been before being below
between both but by can can't cannot could couldn't did didn't do does doesn't doing don't down during each
few for from further get gets got had hadn't has hasn't have haven't having he her here hers herself him
himself his how however i if in into is isn't it it's its itself just let's like make makes many may me might
more most much must my myself need needs no nor not now of off often on once one only or other others our ours
ourselves out over own per same she should shouldn't so some such than that that's the their theirs them
themselves then there there's these they this those through to too two under until up upon us use used uses
using very via was wasn't we were weren't what when where whether which while who whom why will with within
without won't would wouldn't yes yet you your yours yourself yourselves every even first new well way ways
want also able really three still back take takes taken thing things something anything nothing lot lots
read click page pages see www http https com html getting become becomes decide decides done going know
keep kept put puts set sets look looks say says said give gives given come comes part parts based across
""".split())
_WORD = re.compile(r"[^\W\d_][\w'’-]*[^\W_]|[^\W\d_]", re.UNICODE)


# -- pure parts -------------------------------------------------------------

def section_of(url: str) -> str:
    """The site section of a URL: ``/blog/`` for /blog/post.html or /blog/, ``/`` for /about.html or /."""
    path = urlsplit(url).path or "/"
    parts = path.split("/")
    # "/a/b" -> ["", "a", "b"]; "/a/" -> ["", "a", ""]; "/a" -> ["", "a"]: only a folder is a section.
    if len(parts) >= 3 and parts[1]:
        return f"/{parts[1]}/"
    return "/"


def cluster_count(chunks: int) -> int:
    """How many topic clusters a snapshot of ``chunks`` chunks gets: ``min(8, round(sqrt(chunks / 2)))``, >= 1."""
    if chunks <= 0:
        return 0
    return max(1, min(MAX_CLUSTERS, round(math.sqrt(chunks / 2))))


def kmeans(vectors: np.ndarray, k: int, *, seed: int = SEED, iterations: int = ITERATIONS) -> tuple[np.ndarray, np.ndarray]:
    """Spherical k-means (cosine) of the rows of ``vectors``: (unit centroids k x d, the label of each row).

    k-means++ initialisation from a seeded generator: the same vectors in the same order give the same
    clusters. Fewer distinct rows than ``k`` gives fewer clusters.
    """
    x = np.asarray(vectors, dtype=np.float64)
    if x.ndim != 2 or len(x) == 0 or k < 1:
        return np.zeros((0, x.shape[1] if x.ndim == 2 else 0)), np.zeros(0, dtype=int)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    k = min(k, len(np.unique(np.round(x, 6), axis=0)))
    rng = np.random.default_rng(seed)
    centroids = [x[rng.integers(len(x))]]
    for _ in range(1, k):
        distance = np.clip(1 - np.max(x @ np.array(centroids).T, axis=1), 0, None)
        total = distance.sum()
        if total <= 0:
            break
        centroids.append(x[rng.choice(len(x), p=distance / total)])
    c = np.array(centroids)
    labels = np.full(len(x), -1)
    for _ in range(iterations):
        new = np.argmax(x @ c.T, axis=1)
        if np.array_equal(new, labels):
            break
        labels = new
        for j in range(len(c)):
            members = x[labels == j]
            if len(members):
                mean = members.sum(axis=0)
                c[j] = mean / max(np.linalg.norm(mean), 1e-12)
            else:   # an empty cluster takes the row farthest from its centroid
                far = int(np.argmin(np.sum(x * c[labels], axis=1)))
                c[j] = x[far]
    return c.astype(np.float32), labels


def words(text: str) -> set[str]:
    """The distinct topic words of a text: lower case, three letters or more, no stopword."""
    found = set()
    for match in _WORD.finditer(text.lower()):
        word = match.group(0).replace("’", "'").strip("'-")
        if word.endswith("'s"):
            word = word[:-2]
        if len(word) >= 3 and word not in STOPWORDS:
            found.add(word)
    return found


def label_terms(clusters: Sequence[Sequence[set[str]]], top: int = LABEL_TERMS,
                headings: Sequence[Sequence[set[str]]] | None = None) -> list[list[str]]:
    """The most distinctive words of each cluster (each a list of chunks' word sets), best first.

    Class-based tf-idf: a word scores by the share of the cluster's chunks that
    hold it, times ``log(1 + A / f)``, where ``f`` is how many chunks of all
    clusters hold it and ``A`` the average cluster size; a word in the titles
    or headings of the chunks that hold it (``headings``: their word sets,
    chunk by chunk) counts up to half again as much: that is how people name
    the topic. A word in fewer than two of a cluster's chunks (of a cluster
    with two or more) does not name it; a plural next to its singular is one
    word; two clusters never get the same label while another word tells them apart.
    """
    sizes = [len(c) for c in clusters]
    if not any(sizes):
        return [[] for _ in clusters]
    overall: Counter[str] = Counter()
    within, titled = [], []
    for i, chunk_words in enumerate(clusters):
        counts: Counter[str] = Counter()
        for ws in chunk_words:
            counts.update(ws)
        within.append(counts)
        overall.update(counts)
        named: Counter[str] = Counter()
        for ws in (headings[i] if headings is not None else []):
            named.update(ws)
        titled.append(named)
    average = sum(sizes) / max(1, sum(1 for s in sizes if s))
    labels: list[list[str] | None] = [None] * len(clusters)
    used: set[frozenset[str]] = set()
    for i in sorted(range(len(clusters)), key=lambda j: (-sizes[j], j)):   # the biggest clusters choose first
        counts, size = within[i], sizes[i]
        floor = 2 if size >= 2 else 1
        ranked = sorted(((-(n / size) * math.log(1 + average / overall[w]) * (1 + 0.5 * min(1, titled[i][w] / n)), w)
                         for w, n in counts.items() if n >= floor))
        candidates: list[str] = []
        stems: set[str] = set()   # a word whose stem an earlier candidate has is its plural or singular
        for _, word in ranked:
            if word.rstrip("s") not in stems:
                stems.add(word.rstrip("s"))
                candidates.append(word)
        chosen = candidates[:top]
        spare = iter(candidates[top:])
        while chosen and frozenset(chosen) in used:
            nxt = next(spare, None)
            if nxt is None:
                break
            chosen = chosen[:-1] + [nxt]
        used.add(frozenset(chosen))
        labels[i] = chosen
    return [label or [] for label in labels]


def _shares(counter: Counter, total: int, pages: Counter | None = None) -> list[dict]:
    rows = [{"name": name, "chunks": n, "share": round(n / total, 4) if total else 0.0,
             **({"pages": pages[name]} if pages is not None else {})}
            for name, n in counter.items()]
    return sorted(rows, key=lambda r: (-r["chunks"], r["name"]))


def summarize(pages: Iterable[store.PageRow], clusters: list[dict], *, max_section_share: float,
              snapshot_id: int | None = None, site: str | None = None) -> dict:
    """The coverage record from a snapshot's pages and its labelled clusters (see the module docstring)."""
    pages = list(pages)
    total = sum(p.chunks for p in pages)
    sections, section_pages, tags, languages = Counter(), Counter(), Counter(), Counter()
    for page in pages:
        name = section_of(page.url)
        sections[name] += page.chunks
        section_pages[name] += 1
        for tag in dict.fromkeys(page.tags or ["(untagged)"]):
            tags[tag] += page.chunks
        languages[page.language or "unknown"] += page.chunks
    record = {
        "version": VERSION, "snapshot_id": snapshot_id, "site": site, "chunks": total, "pages": len(pages),
        "sections": _shares(sections, total, section_pages), "tags": _shares(tags, total),
        "languages": _shares(languages, total), "clusters": clusters,
        "max_section_share": max_section_share,
    }
    record["warnings"] = warnings(record)
    return record


def warnings(record: dict) -> list[str]:
    """What a person should know: a section above the site's limit (one line each)."""
    limit = record.get("max_section_share", DEFAULT_MAX_SECTION_SHARE)
    out = []
    for section in record.get("sections") or []:
        if section["share"] > limit:
            out.append(f"section {section['name']} holds {section['share']:.0%} of the chunks "
                       f"({section['chunks']} of {record['chunks']}, {section.get('pages', '?')} pages), above "
                       f"the {limit:.0%} limit (coverage.max_section_share): a bot answering from this snapshot "
                       "knows mostly that part of the site")
    return out


def headline(record: dict | None) -> str:
    """The record in one line: the biggest sections and topics."""
    if not record:
        return "not computed"
    sections = ", ".join(f"{s['name']} {s['share']:.0%}" for s in record["sections"][:3]) or "no chunks"
    topics = "; ".join(f"{c['label']} {c['share']:.0%}" for c in record["clusters"][:3])
    return f"sections {sections}" + (f"; topics {topics}" if topics else "")


# -- over the store -----------------------------------------------------------

def clusters_of(conn: psycopg.Connection, table_name: str, chunks: int) -> tuple[list[dict], dict]:
    """The labelled topic clusters of a snapshot table of ``chunks`` chunks, and how they were made."""
    k = cluster_count(chunks)
    method = {"k": k, "fitted_on": 0, "seed": SEED, "algorithm": "spherical k-means, class-based tf-idf labels"}
    if k == 0:
        return [], method
    sampled = store.sample(conn, table_name, FIT_SAMPLE)
    centroids, labels = kmeans(np.stack([s.embedding for s in sampled]), k)
    method.update(k=len(centroids), fitted_on=len(sampled))
    members: list[list[store.SampledChunk]] = [[] for _ in centroids]
    for chunk, label in zip(sampled, labels):
        members[label].append(chunk)
    terms = label_terms([[words(" ".join((c.title, " ".join(c.heading_path), c.content))) for c in group]
                         for group in members],
                        headings=[[words(" ".join((c.title, *c.heading_path))) for c in group] for group in members])
    sizes = store.cluster_sizes(conn, table_name, centroids) if chunks > len(sampled) else \
        [len(group) for group in members]
    clusters = []
    for index, (group, names, size) in enumerate(zip(members, terms, sizes)):
        titles = Counter(c.title for c in group if c.title)
        clusters.append({"id": index, "label": " / ".join(names) or f"topic {index + 1}", "terms": names,
                         "chunks": size, "share": round(size / chunks, 4) if chunks else 0.0,
                         "titles": [t for t, _ in titles.most_common(3)]})
    clusters.sort(key=lambda c: (-c["chunks"], c["id"]))
    return clusters, method


def compute(conn: psycopg.Connection, snap, max_section_share: float = DEFAULT_MAX_SECTION_SHARE) -> dict:
    """The coverage record of a built snapshot (a ``sitekb.store.snapshots.Snapshot``), from its table."""
    if snap.table_name is None:
        raise NotFound(f"snapshot {snap.snapshot_id} has no table any more (state {snap.state}): retention dropped "
                       "its chunks, so its coverage cannot be computed. Pin snapshots you want to keep.")
    started = time.monotonic()
    page_rows = store.pages(conn, snap.table_name)
    clusters, method = clusters_of(conn, snap.table_name, sum(p.chunks for p in page_rows))
    record = summarize(page_rows, clusters, max_section_share=max_section_share, snapshot_id=snap.snapshot_id,
                       site=snap.site)
    record["method"] = method
    record["seconds"] = round(time.monotonic() - started, 3)
    return record


def refresh(conn: psycopg.Connection, snap, max_section_share: float = DEFAULT_MAX_SECTION_SHARE) -> dict:
    """Compute the snapshot's coverage, store it with the snapshot, log its warnings; return the record."""
    record = compute(conn, snap, max_section_share)
    store.save(conn, snap.snapshot_id, record)
    log.info("snapshot %s coverage: %s (%.2fs)", snap.snapshot_id, headline(record), record["seconds"])
    for warning in record["warnings"]:
        log.warning("snapshot %s: %s", snap.snapshot_id, warning)
    return record


def of_snapshot(conn: psycopg.Connection, snap, max_section_share: float | None = None) -> dict:
    """The stored record; computed (and stored) now when the snapshot has none, or with another limit given."""
    record = store.get(conn, snap.snapshot_id)
    if record is not None and max_section_share is not None and record.get("max_section_share") != max_section_share:
        record = {**record, "max_section_share": max_section_share}
        record["warnings"] = warnings(record)
        return record
    if record is None:
        record = refresh(conn, snap, DEFAULT_MAX_SECTION_SHARE if max_section_share is None else max_section_share)
    return record


def format_coverage(record: dict, limit: int = 10) -> str:
    """The record for a person, as `sitekb coverage` prints it."""
    lines = [f"{record.get('site')}: snapshot {record.get('snapshot_id')}, {record['chunks']} chunks of "
             f"{record['pages']} pages"]
    for heading, rows, extra in (("Sections", record["sections"], True), ("Topics", record["clusters"], False),
                                 ("Tags", record["tags"], False), ("Languages", record["languages"], False)):
        if not rows:
            continue
        lines += ["", f"{heading}:"]
        for row in rows[:limit]:
            name = row.get("label", row.get("name"))
            bar = "#" * max(1 if row["chunks"] else 0, round(row["share"] * 30))
            detail = f"  ({row['pages']} pages)" if extra and "pages" in row else ""
            if "titles" in row and row["titles"]:
                detail = f"  e.g. {'; '.join(row['titles'][:2])}"
            lines.append(f"  {row['share']:>5.0%}  {row['chunks']:>6}  {bar:<30}  {name}{detail}")
        if len(rows) > limit:
            lines.append(f"  ... and {len(rows) - limit} more (--json lists all)")
    lines += ["", f"Limit per section: {record['max_section_share']:.0%} (coverage.max_section_share)"]
    lines += [f"WARNING {w}" for w in record["warnings"]] or ["No section is above the limit."]
    return "\n".join(lines)

"""What decided a run, in plain words, from its records alone (the run, its stages, its snapshot).

"Published to production: 8 of 8 golden questions answered; 2 pages quarantined
for thin content." / "Rejected: pages fell from 40 to 28 (31% drop, limit 20%)
against the live snapshot. The live snapshot stayed." The gate's own
messages already say what was measured against which limit; this module
words the rest (quarantine reasons, golden score, state) and picks the tone.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass

# Each document check, as a person says why a page was held back ("quarantined for ...").
CHECK_WORDS = {
    "title": "having no title", "min_words": "thin content", "max_words": "being too long",
    "language": "a language the site does not allow", "encoding": "damaged characters",
    "boilerplate": "being mostly navigation or boilerplate", "transcript_noise": "a noisy automatic transcript",
    "duplicate": "duplicating another page", "near_duplicate": "nearly duplicating another page",
    "prompt_injection": "text addressed to AI models", "hidden_text": "hidden text",
    "hidden_injection": "hidden instructions to AI models", "chunks": "having nothing to embed",
    "max_chunk_tokens": "a passage too long to embed",
}


@dataclass(frozen=True)
class Verdict:
    """A run's outcome: ``tone`` (published, rejected, failed, waiting, running, dry-run) and the sentence."""

    tone: str
    text: str


def quarantine_words(quarantined_urls: dict[str, list[str]]) -> str:
    """'3 pages quarantined (2 for thin content, 1 for a noisy automatic transcript)', or ''."""
    if not quarantined_urls:
        return ""
    reasons = Counter(check for checks in quarantined_urls.values() for check in dict.fromkeys(checks or ["?"]))
    n = len(quarantined_urls)
    parts = [f"{count} for {CHECK_WORDS.get(check, check.replace('_', ' '))}" for check, count in
             sorted(reasons.items(), key=lambda kv: (-kv[1], kv[0]))]
    noun = "page" if n == 1 else "pages"
    if len(parts) == 1:
        return f"{n} {noun} quarantined {parts[0].split(' ', 1)[1]}"
    return f"{n} {noun} quarantined ({', '.join(parts)})"


def golden_words(golden: dict | None) -> str:
    if not golden or not golden.get("asked"):
        return "no golden questions asked"
    return f"{golden['hits']} of {golden['asked']} golden questions answered"


def of_run(run: dict) -> Verdict:
    """The verdict of a row of :func:`sitekb.store.reports.runs_of_site`."""
    stages = run.get("stages") or {}
    evaluate, validate = stages.get("evaluate") or {}, stages.get("validate") or {}
    quality = run.get("snapshot_quality") or {}
    golden = evaluate.get("golden") or quality.get("golden")
    held = quarantine_words(validate.get("quarantined_urls") or {})
    if (run.get("params") or {}).get("dry_run"):
        cost = (stages.get("embed") or {}).get("estimated_usd")
        return Verdict("dry-run", "Dry run: nothing was embedded or published"
                       + (f"; embedding would cost ${cost:.4f}" if cost is not None else "") + ".")
    status, state = run.get("status"), run.get("snapshot_state")
    if status == "running":
        done = [name for name in stages if name]
        return Verdict("running", "Running" + (f": {', '.join(done)} done so far" if done else "") + ".")
    if status == "blocked" or state == "rejected":
        reasons = list(evaluate.get("failures") or [])
        for r in run.get("snapshot_reasons") or []:
            message = r.get("message") if isinstance(r, dict) else str(r)
            if message and message not in reasons:
                if isinstance(r, dict) and r.get("check") == "approval":
                    return Verdict("rejected", f"Rejected by a content owner: {message}. The live snapshot stayed.")
                reasons.append(message)
        if not reasons and run.get("error"):
            reasons = [run["error"]]
        text = "Rejected: " + "; ".join(reasons or ["the quality gate failed"])
        return Verdict("rejected", text.rstrip(".") + ". The live snapshot stayed.")
    if status == "failed":
        error = (run.get("error") or "no reason recorded").splitlines()[0]
        return Verdict("failed", f"Failed before publishing: {error}. The live snapshot stayed.")
    facts = "; ".join(part for part in (golden_words(golden), held) if part)
    aliases = run.get("aliases") or []
    if state == "published" or (state == "retired" and status == "succeeded"):
        where = f" to {', '.join(aliases)}" if aliases else ""
        later = " (since replaced)" if state == "retired" else ""
        return Verdict("published", f"Published{where}{later}: {facts}.")
    if state == "validated":
        return Verdict("waiting", f"Passed the gate, not published (waiting for a content owner's approval, or "
                                  f"published elsewhere by hand): {facts}.")
    return Verdict(status or "unknown", f"{(status or 'unknown').capitalize()}: {facts}.")

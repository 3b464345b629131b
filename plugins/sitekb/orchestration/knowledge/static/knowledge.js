// The Knowledge view of the sitekb Airflow plugin.
//
// Reads the plugin's api/ endpoints with the Airflow session (the UI's cookie) and builds the page
// with createElement and text nodes only: titles, URLs, reasons and check messages come from crawled
// pages and from people, so none of it is ever parsed as HTML. State lives in the URL (?site=,
// ?from=&to=, ?dag_id= from a DAG's tab), so the Airflow UI's address names what is shown.
"use strict";

const params = new URLSearchParams(location.search);
const $ = (id) => document.getElementById(id);

// -- building blocks ---------------------------------------------------------

function el(tag, props, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "onclick") node.addEventListener("click", value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function when(iso) {
  if (!iso) return "";
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? String(iso) : date.toISOString().slice(0, 16).replace("T", " ") + " UTC";
}

function snapshotLabel(id) {
  return id === null || id === undefined ? "(none)" : `#${id}`;
}

function golden(score) {
  return score && score.asked ? `${score.hits}/${score.asked}` : "—";
}

function setStatus(text, isError) {
  const status = $("status");
  status.textContent = text || "";
  status.className = isError ? "status error" : "status";
  status.hidden = !text;
}

function notice(text, isError) {
  const box = $("notice");
  box.textContent = text;
  box.className = isError ? "notice error" : "notice";
  box.hidden = !text;
}

function fill(tbody, rows, emptyText, columns) {
  tbody.replaceChildren(...(rows.length ? rows
    : [el("tr", {}, el("td", {colspan: columns, class: "muted"}, emptyText))]));
}

async function api(path, options) {
  const init = {credentials: "same-origin", headers: {Accept: "application/json"}, ...(options || {})};
  if (init.body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(init.body);
  }
  const response = await fetch("api/" + path, init);
  let body = null;
  try { body = await response.json(); } catch (_) { /* an empty or non-JSON answer */ }
  if (!response.ok) {
    const detail = body && body.detail;
    const message = typeof detail === "string" ? detail
      : detail ? JSON.stringify(detail) : `${response.status} ${response.statusText}`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return body;
}

// -- sites --------------------------------------------------------------------

function renderSites(sites, selected) {
  const rows = sites.map((s) => el("tr", {"data-site": s.site, class: s.site === selected ? "selected" : null},
    el("td", {}, el("a", {href: "?site=" + encodeURIComponent(s.site)}, s.site),
       el("div", {class: "muted"}, s.dag_id)),
    el("td", {}, Object.entries(s.aliases).map(([alias, id]) => el("span", {class: "badge alias"}, `${alias} → #${id}`)),
       Object.keys(s.aliases).length ? null : el("span", {class: "muted"}, "none")),
    el("td", {class: "num"}, s.snapshots),
    el("td", {}, s.last_run_status ? el("span", {class: "run-" + s.last_run_status}, s.last_run_status) : "—",
       s.last_run_started_at ? el("div", {class: "muted when"}, when(s.last_run_started_at)) : null)));
  fill($("sites").tBodies[0], rows, "No site has a run yet.", 4);
  $("sites-section").hidden = false;
}

// -- one site -----------------------------------------------------------------

function renderAliases(detail) {
  const rows = [];
  for (const a of detail.aliases) {
    const action = el("td", {class: "actions"});
    const row = el("tr", {"data-alias": a.alias},
      el("td", {}, el("span", {class: "badge alias"}, a.alias)),
      el("td", {class: "target", "data-snapshot-id": a.snapshot_id},
         `#${a.snapshot_id} `, el("span", {class: "state-" + a.state}, a.state),
         el("div", {class: "muted when"}, "created " + when(a.snapshot_created_at))),
      el("td", {}, golden(a.golden)),
      el("td", {}, a.actor
        ? [`${snapshotLabel(a.from_snapshot)} → #${a.snapshot_id} by ${a.actor}`,
           el("div", {class: "muted when"}, when(a.moved_at))]
        : el("span", {class: "when"}, when(a.updated_at)),
         a.reason ? el("div", {class: "muted"}, a.reason) : null),
      action);
    if (detail.can_rollback && a.rollback_to != null) action.append(rollbackControl(detail.site, a.alias, a.rollback_to));
    else if (detail.can_rollback) action.append(el("span", {class: "muted"}, "nothing to roll back to"));
    else action.append(el("span", {class: "muted"}, "read-only"));
    rows.push(row);
  }
  fill($("aliases").tBodies[0], rows, "No alias points to a snapshot of this site yet.", 5);
}

function rollbackControl(site, alias, target) {
  const wrap = el("div", {});
  const reason = el("input", {type: "text", name: "reason", maxlength: 500, "aria-label": "Reason",
                              placeholder: "Why (kept in the audit log)"});
  const confirm = el("button", {type: "submit", class: "confirm-rollback"}, `Roll back ${alias} to #${target}`);
  const cancel = el("button", {type: "button", class: "secondary"}, "Cancel");
  const form = el("form", {class: "rollback-form", hidden: true}, reason, confirm, cancel);
  const open = el("button", {type: "button", class: "secondary open-rollback"}, `Roll back to #${target}…`);
  open.addEventListener("click", () => { form.hidden = false; open.hidden = true; reason.focus(); });
  cancel.addEventListener("click", () => { form.hidden = true; open.hidden = false; });
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    confirm.disabled = true;
    try {
      const moved = await api(`sites/${encodeURIComponent(site)}/aliases/${encodeURIComponent(alias)}/rollback`,
                              {method: "POST", body: {reason: reason.value}});
      await showSite(site);
      notice(`${moved.alias} moved back from snapshot #${moved.from_snapshot} to #${moved.to_snapshot} `
             + `by ${moved.actor}.`);
    } catch (error) {
      confirm.disabled = false;
      notice(`Rollback of ${alias} refused: ${error.message}`, true);
    }
  });
  wrap.append(open, form);
  return wrap;
}

function qualityCell(s) {
  const q = s.quality || {};
  const parts = [];
  const docs = q.documents;
  if (docs && docs.extracted !== undefined) {
    parts.push(el("div", {}, `${docs.accepted} accepted, ${docs.quarantined} quarantined`
      + (docs.approved ? `, ${docs.approved} approved` : "")));
    const checks = Object.entries(docs.failed_checks || {}).map(([check, n]) => `${check} ${n}`);
    if (checks.length) parts.push(el("div", {class: "muted"}, "failed: " + checks.join(", ")));
  }
  const problems = [...(q.failures || []), ...(s.reasons || [])];
  const seen = new Set();
  for (const p of problems) {
    const text = p.message ? `${p.check}: ${p.message}` : String(p.check || JSON.stringify(p));
    if (!seen.has(text)) { seen.add(text); parts.push(el("div", {class: "bad"}, text)); }
  }
  return parts.length ? parts : "—";
}

function diffCell(d) {
  if (!d || (d.against === null && !d.added && !d.removed && !d.changed)) return "—";
  const against = d.against === null ? "first snapshot" : `vs #${d.against}`;
  return `${against}: +${d.added} −${d.removed} ~${d.changed}`;
}

function renderSnapshots(detail) {
  const rows = detail.snapshots.map((s) => el("tr", {"data-snapshot-id": s.snapshot_id},
    el("td", {}, `#${s.snapshot_id} `, s.aliases.map((a) => el("span", {class: "badge alias"}, a))),
    el("td", {}, el("span", {class: "state state-" + s.state}, s.state),
       s.pinned ? el("div", {class: "muted"}, "pinned") : null,
       s.has_table ? null : el("div", {class: "muted"}, "chunks dropped by retention")),
    el("td", {}, el("span", {class: "when"}, when(s.created_at)), el("div", {class: "muted"}, s.embedding_model)),
    el("td", {class: "num"}, s.counts.documents ?? "—"),
    el("td", {class: "num"}, s.counts.chunks ?? "—"),
    el("td", {class: "golden"}, golden(s.quality.golden),
       s.quality.golden && s.quality.golden.missed && s.quality.golden.missed.length
         ? el("div", {class: "muted"}, "missed: " + s.quality.golden.missed.join("; ")) : null),
    el("td", {class: "quality"}, qualityCell(s)),
    el("td", {}, diffCell(s.diff))));
  fill($("snapshots").tBodies[0], rows, "No snapshot yet.", 8);
}

function renderCompare(detail) {
  const comparable = detail.snapshots.filter((s) => s.has_table);
  const options = (selected) => comparable.map((s) => el("option", {value: s.snapshot_id,
    selected: String(s.snapshot_id) === String(selected)}, `#${s.snapshot_id} (${s.state}, ${when(s.created_at)})`));
  const to = params.get("to") || (comparable[0] && comparable[0].snapshot_id);
  const from = params.get("from") || (comparable[1] && comparable[1].snapshot_id);
  $("compare-site").value = detail.site;
  $("compare-from").replaceChildren(...options(from));
  $("compare-to").replaceChildren(...options(to));
  $("compare").hidden = comparable.length < 2;
  if (comparable.length < 2) {
    $("diff").replaceChildren(el("p", {class: "muted"}, "Two snapshots that still have their chunks are needed."));
  }
}

function pagesTable(pages) {
  return el("table", {class: "grid"},
    el("thead", {}, el("tr", {}, el("th", {}, "Page"), el("th", {class: "num"}, "Chunks before"),
                     el("th", {class: "num"}, "after"), el("th", {class: "num"}, "+"), el("th", {class: "num"}, "−"))),
    el("tbody", {}, pages.map((p) => el("tr", {},
      el("td", {}, p.title || "(untitled)", el("div", {class: "muted url"}, p.url)),
      el("td", {class: "num"}, p.chunks_before), el("td", {class: "num"}, p.chunks_after),
      el("td", {class: "num"}, p.chunks_added), el("td", {class: "num"}, p.chunks_removed)))));
}

function renderDiff(d) {
  const parts = [el("p", {class: "diff-summary", id: "diff-summary"},
    `#${d.from_snapshot} → #${d.to_snapshot}: ${d.added_total} pages added, ${d.removed_total} removed, `
    + `${d.changed_total} changed, ${d.unchanged_pages} unchanged; chunks ${d.chunks_before} → ${d.chunks_after} `
    + `(+${d.chunks_added} −${d.chunks_removed}, churn ${(d.churn * 100).toFixed(1)}%)`)];
  for (const [kind, title] of [["added", "Added"], ["removed", "Removed"], ["changed", "Changed"]]) {
    if (!d[kind].length) continue;
    const more = d[`${kind}_total`] > d[kind].length ? ` (first ${d[kind].length} of ${d[`${kind}_total`]})` : "";
    parts.push(el("h4", {}, `${title} pages${more}`), pagesTable(d[kind]));
  }
  $("diff").replaceChildren(...parts);
}

function renderLive(detail, held) {
  $("live-title").textContent = `Live snapshot #${held.snapshot_id} (${detail.default_alias}): quarantine and exclusions`;
  const q = held.quarantine;
  const x = held.exclusions;
  const quarantine = q.total ? el("table", {class: "grid", id: "quarantine"},
    el("thead", {}, el("tr", {}, el("th", {}, "Page"), el("th", {}, "Failed checks"), el("th", {}, "Verdict"))),
    el("tbody", {}, q.documents.map((d) => el("tr", {},
      el("td", {}, d.title || "(untitled)", el("div", {class: "muted url"}, d.url)),
      el("td", {}, el("ul", {class: "plain"}, (d.failures || []).map((f) =>
        el("li", {}, f.check, f.message ? el("span", {class: "muted"}, ": " + f.message) : null)))),
      el("td", {}, d.status === "quarantined" ? el("span", {class: "bad"}, "quarantined")
        : [el("span", {class: "good"}, `approved by ${d.approved_by}`),
           d.approval_reason ? el("div", {class: "muted"}, d.approval_reason) : null])))))
    : el("p", {class: "muted"}, "Nothing was quarantined.");
  const rules = Object.entries(x.by_rule).map(([rule, n]) => `${rule} ${n}`).join(", ");
  const exclusions = x.total ? el("table", {class: "grid", id: "exclusions"},
    el("thead", {}, el("tr", {}, el("th", {}, "URL"), el("th", {}, "Rule"), el("th", {}, "Detail"))),
    el("tbody", {}, x.exclusions.map((e) => el("tr", {},
      el("td", {class: "url"}, e.url), el("td", {}, e.rule), el("td", {class: "muted"}, e.detail || "")))))
    : el("p", {class: "muted"}, "The crawl left nothing out.");
  $("live").replaceChildren(
    el("p", {class: "hint"}, `Run ${held.run_id}.`),
    el("div", {class: "columns"},
      el("div", {}, el("h4", {}, `Quarantine: ${q.quarantined} held back, ${q.approved} let through by an approval`),
         quarantine),
      el("div", {}, el("h4", {}, `Exclusions: ${x.total} URLs left out` + (rules ? ` (${rules})` : "")),
         exclusions)));
}

function renderMoves(detail) {
  const rows = detail.moves.map((m) => el("tr", {"data-move-id": m.id},
    el("td", {class: "when"}, when(m.moved_at)),
    el("td", {}, el("span", {class: "badge alias"}, m.alias)),
    el("td", {}, `${snapshotLabel(m.from_snapshot)} → ${snapshotLabel(m.to_snapshot)}`,
       m.decision && m.decision !== "moved" ? el("span", {class: "badge"}, m.decision) : null),
    el("td", {class: "actor"}, m.actor),
    el("td", {class: "muted"}, m.reason)));
  fill($("moves").tBodies[0], rows, "No alias has moved yet.", 5);
}

async function showSite(site) {
  const path = `sites/${encodeURIComponent(site)}`;
  const detail = await api(path);
  const me = await meOnce;
  detail.default_alias = me.default_alias;
  document.title = `${site} · sitekb knowledge`;
  $("site-title").textContent = `Site ${site}`;
  $("site-sub").textContent = `DAG ${detail.dag_id} · ` + (detail.can_rollback
    ? "you may roll its aliases back (you may trigger this DAG)"
    : "read-only: rolling an alias back needs the right to trigger this DAG");
  $("report-link").setAttribute("href", "report/" + encodeURIComponent(site));
  renderAliases(detail);
  renderSnapshots(detail);
  renderCompare(detail);
  renderMoves(detail);
  if (detail.live_snapshot) {
    renderLive(detail, await api(`${path}/snapshots/${detail.live_snapshot}/held-back`));
  } else {
    $("live-title").textContent = "Live snapshot";
    $("live").replaceChildren(el("p", {class: "muted"}, `No snapshot is published as ${me.default_alias} yet.`));
  }
  if (params.get("from") && params.get("to")) {
    try {
      renderDiff(await api(`${path}/diff?from=${encodeURIComponent(params.get("from"))}`
                           + `&to=${encodeURIComponent(params.get("to"))}`));
    } catch (error) {
      $("diff").replaceChildren(el("p", {class: "bad"}, `No diff: ${error.message}`));
    }
  }
  $("site-section").hidden = false;
  setStatus("");
}

const meOnce = api("me");

async function main() {
  try {
    const [me, sites] = await Promise.all([meOnce, api("sites")]);
    $("who").textContent = `Signed in to Airflow as ${me.name}.`;
    let site = params.get("site");
    const dag = params.get("dag_id");
    if (!site && dag) {
      const match = sites.find((s) => s.dag_id === dag);
      if (!match) {
        renderSites(sites, null);
        setStatus(`The DAG ${dag} has no sitekb snapshot: sitekb's site DAGs are named sitekb_<site>.`);
        return;
      }
      site = match.site;
    }
    if (!site && sites.length === 1) site = sites[0].site;
    renderSites(sites, site);
    if (!sites.length) setStatus("No site has a run yet: trigger a site's DAG (sitekb_<site>) to build its first snapshot.");
    else if (!site) setStatus("Choose a site.");
    else await showSite(site);
  } catch (error) {
    if (error.status === 401) {
      setStatus("You are not signed in to Airflow. Sign in, then open Knowledge again.", true);
    } else {
      setStatus(error.message, true);
    }
  }
}

main();

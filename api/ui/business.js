// A payment or an order: `kprobe why --payment ID` (--order) drawn. Its business events across services in
// time order (gap, duration, settlement window), the kernel root cause where it struck, and the causal
// chain of the span the engine explained (the incident page's drawing), with links to go deeper.
import { get } from "/ui/api.js";
import { dur, el, utc } from "/ui/format.js";
import { drawChain, rootLine } from "/ui/incident.js";

// to the microsecond, as `kprobe timeline` prints: ns since the epoch do not survive a JSON number exactly
function usec(ns) { return utc(ns).replace(/(\.\d{6})\d{3}Z$/, "$1Z"); }

function windowText(w) {
  if (!w) return "";
  return `${w.window} (${w.cutoff}), value date ${w.value_date}: ` +
    (w.missed ? `MISSED by ${dur(w.overrun_ns)}` : `slack ${dur(w.slack_ns)}`);
}

function eventRow(e, prev) {
  const flag = e.kind === "kernel" ? el("b", { class: "badge" }, "ROOT CAUSE") : e.error ? "ERROR" : "";
  return el("tr", { class: `${e.kind === "kernel" ? "root" : ""}${e.error ? " failed" : ""}`, "data-kind": e.kind,
                    "data-span": e.span_id || "" },
    el("td", {}, usec(e.ts_ns)), el("td", {}, prev === null ? "" : `+${dur(e.ts_ns - prev)}`),
    el("td", {}, e.span_id ? el("a", { href: `#/incident/span-${e.span_id}` }, e.label) : e.label),
    el("td", {}, e.service || "-"), el("td", {}, e.end_ns > e.ts_ns ? dur(e.end_ns - e.ts_ns) : ""),
    el("td", {}, flag), el("td", {}, e.detail, e.window ? [el("br"), windowText(e.window)] : ""));
}

function timelineLink(events) {
  const pids = [...new Set(events.map((e) => e.pid).filter((p) => p > 0))].slice(0, 16);
  const lo = Math.min(...events.map((e) => e.ts_ns)), hi = Math.max(...events.map((e) => e.end_ns));
  const pad = Math.max(1000, Math.round((hi - lo) * 0.05));
  return `#/timeline?from=${BigInt(lo) - BigInt(pad)}&to=${BigInt(hi) + BigInt(pad)}` +
    (pids.length ? `&pid=${pids.join(",")}` : "");
}

export async function showBusiness(view, kind, key) {
  view.replaceChildren(el("p", {}, `explaining ${kind} ${key}…`));
  const first = await get("/why/business", { [kind]: key, limit: 500 });
  let analysis = null, missing = "";
  if (first.incident_id && first.root_cause) {
    try { analysis = await get(`/incidents/${encodeURIComponent(first.incident_id)}`); }
    catch (e) { if (e.status === 401) throw e; missing = e.message; }
  }
  const events = [...first.events];
  const body = el("tbody");
  let prev = null;
  const append = (evs) => { for (const e of evs) { body.append(eventRow(e, prev)); prev = e.ts_ns; } };
  append(first.events);
  const more = el("button", { id: "more", hidden: "" }, "More events");
  let cursor = first.next_cursor;
  more.hidden = !cursor;
  more.addEventListener("click", async () => {
    const page = await get("/why/business", { [kind]: key, limit: 500, cursor });
    events.push(...page.events);
    append(page.events);
    cursor = page.next_cursor;
    more.hidden = !cursor;
  });
  const title = `${kind[0].toUpperCase()}${kind.slice(1)} ${key}`;
  view.replaceChildren(el("section", { class: "card", id: "business", "data-kind": kind, "data-key": key },
    el("h2", {}, title),
    el("p", { class: "muted" }, `${first.events_total} events · as \`kprobe why --${kind} ${key}\` answers`),
    analysis ? rootLine(analysis.root_cause) : el("p", { id: "root-cause" }, first.root_cause || "no kernel delay found"),
    first.root_cause ? el("p", { id: "business-root", class: "muted" }, first.root_cause, "  [ROOT CAUSE]") : "",
    first.incidents.map((i) => el("p", { class: "error incident-line" }, "INCIDENT: ", i)),
    analysis ? drawChain(analysis) : missing ? el("p", { class: "muted" }, `no chain: ${missing}`) : "",
    el("h3", {}, "Business events"),
    el("table", { id: "business-events" },
      el("thead", {}, el("tr", {}, ["time (UTC)", "gap", "event", "service", "took", "", "detail"].map((h) => el("th", {}, h)))),
      body),
    more,
    first.notes.map((n) => el("p", { class: "muted note" }, "note: ", n)),
    el("p", {},
      first.incident_id ? [el("a", { id: "open-incident", href: `#/incident/${first.incident_id}` },
                                "Open the incident of the explained span"), " · "] : "",
      el("a", { id: "open-timeline", href: timelineLink(events) }, "Open the timeline of these events"))));
}

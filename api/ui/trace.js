// A trace: its spans as a waterfall, and the span `kprobe why --trace` explains.
import { get } from "/ui/api.js";
import { dur, el } from "/ui/format.js";

export async function showTrace(view, id) {
  const t = await get(`/traces/${encodeURIComponent(id)}`);
  const t0 = Math.min(...t.spans.map((s) => s.start_ns)), t1 = Math.max(...t.spans.map((s) => s.end_ns));
  const span = Math.max(1, t1 - t0);
  const rows = t.spans.map((s) => el("div", { class: "wf-row", "data-span": s.span_id },
    el("div", { class: "wf-label" }, el("a", { href: `#/incident/span-${s.span_id}` }, `${s.service} ${s.name}`),
      ` ${dur(s.duration_ns)} ${s.status === "ERROR" ? "ERROR " + s.status_message : ""}`),
    el("div", { class: "wf-track" }, el("div", { class: `wf-bar ${s.status === "ERROR" ? "error" : ""}`,
      style: `left:${((s.start_ns - t0) / span) * 100}%;width:${Math.max(0.3, (s.duration_ns / span) * 100)}%` }))));
  view.replaceChildren(el("section", { class: "card", id: "trace" },
    el("h2", {}, `Trace ${t.trace_id}`),
    el("p", {}, "Explained span: ", el("a", { id: "explain", href: `#/incident/span-${t.explain_span_id}` }, t.explain_span_id)),
    el("div", { class: "waterfall" }, rows)));
}

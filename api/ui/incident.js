// One incident: the causal chain drawn from the business event to the kernel root cause, each link with its delay.
import { get } from "/ui/api.js";
import { dur, el, utc } from "/ui/format.js";

const KIND_LABEL = {
  span: "business event", remote_service: "service hop", cpu_preemption: "CPU", memory_pressure: "memory",
  disk_io: "disk", network: "network", lock_contention: "lock", sleep: "sleep", unknown: "unknown",
  cpu_throttling: "CPU quota", major_fault: "page fault (disk)",
};

function chainNodes(a) {
  const nodes = a.chain.map((c, i) => ({ kind: c.kind, text: a.chain_text[a.chain_text.length - a.chain.length + i],
    delay: c.kind === "span" ? c.duration_ns : c.delay_ns, pid: c.kind === "span" ? c.pid : c.culprit?.pid }));
  if (a.chain_text.length > a.chain.length) {   // a kernel incident: its head is the slow operation itself
    nodes.unshift({ kind: "operation", text: a.chain_text[0], delay: a.victim.operation_ns || a.breakdown.wall_ns,
                    pid: a.victim.pid });
  }
  return nodes;
}

export function drawChain(a) {
  const nodes = chainNodes(a);
  const row = el("div", { class: "chain", id: "chain" });
  nodes.forEach((n, i) => {
    if (i > 0) row.append(el("div", { class: "arrow" }, el("span", {}, `${dur(n.delay)} ⟶`), el("small", {}, "delayed by")));
    const root = i === nodes.length - 1 && nodes.length > 1;
    row.append(el("div", { class: `node ${n.kind}${root ? " root" : ""}`, "data-kind": n.kind },
      el("div", { class: "kind" }, KIND_LABEL[n.kind] || n.kind, root ? el("b", { class: "badge" }, "ROOT CAUSE") : ""),
      el("div", { class: "text" }, n.text)));
  });
  return row;
}

function breakdownBar(b) {
  const parts = [["on CPU", b.on_cpu_ns, "oncpu"], ["run queue", b.runq_ns, "preempted"], ["blocked", b.blocked_ns, "sleep"]];
  const bar = el("div", { class: "bar" });
  for (const [label, ns, cls] of parts) {
    if (ns > 0) bar.append(el("div", { class: `seg c-${cls}`, style: `flex:${ns}`, title: `${label} ${dur(ns)}` }, `${label} ${dur(ns)}`));
  }
  return bar;
}

// "Root cause: <kind> — <culprit> PID n (delay)", the line a reader looks for first
export function rootLine(rc) {
  return rc ? el("p", { id: "root-cause", class: "root-line" }, "Root cause: ",
    el("b", {}, `${rc.kind.replace("_", " ")} — ${rc.culprit.comm ?? "unknown"} PID ${rc.culprit.pid ?? "?"}`),
    ` (${dur(rc.delay_ns)})`) : el("p", { id: "root-cause" }, "no delay found");
}

export async function showIncident(view, id) {
  view.replaceChildren(el("p", {}, "explaining…"));
  const a = await get(`/incidents/${encodeURIComponent(id)}`);
  const pids = new Set([a.victim.pid]);
  for (const c of a.chain) { const p = c.kind === "span" ? c.pid : c.culprit?.pid; if (p) pids.add(p); }
  const pad = Math.max(1, Math.round((a.victim.to_ns - a.victim.from_ns) * 0.05));
  const from = BigInt(a.victim.from_ns) - BigInt(pad), to = BigInt(a.victim.to_ns) + BigInt(pad);
  const tl = `#/timeline?from=${from}&to=${to}&pid=${[...pids].join(",")}`;
  const rc = a.root_cause;
  view.replaceChildren(el("section", { class: "card" },
    el("h2", {}, `Incident ${id}`),
    el("p", { class: "muted" }, `${a.victim.comm} PID ${a.victim.pid} TID ${a.victim.tid}, ${utc(a.victim.from_ns)} .. ${utc(a.victim.to_ns)}`),
    rootLine(rc),
    drawChain(a),
    el("h3", {}, "Where the wall time went"), breakdownBar(a.breakdown),
    el("p", {}, el("a", { id: "open-timeline", href: tl }, "Open the timeline of this incident"),
      a.span ? [" · ", el("a", { href: `#/trace/${a.span.trace_id}` }, `trace ${a.span.trace_id}`)] : ""),
    el("details", {}, el("summary", {}, "As `kprobe why` prints it"), el("pre", {}, a.text))));
}

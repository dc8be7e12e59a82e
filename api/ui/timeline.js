// The timeline: one lane per thread, zoomable from minutes to single microseconds.
// The server sends drawable slices (at least a pixel long) and per-pixel sums of everything shorter;
// slices are SVG (clickable, findable), the sums are painted on a canvas underneath.
// Times travel as strings and BigInt: UTC nanoseconds do not fit a JavaScript number exactly.
import { get } from "/ui/api.js";
import { dur, el, utc } from "/ui/format.js";

const LABEL_W = 240, ROW_H = 14, LANE_PAD = 6, AXIS_H = 22, MIN_SPAN = 1000;
const COLORS = {
  preempted: "#d62728", runq: "#ff6b6b", sleep: "#b0b0b0", io: "#ff7f0e", lock: "#9467bd", net: "#1f77b4",
  other: "#8c564b", new: "#bcbd22", syscall: "#17becf", reclaim: "#e377c2", fault: "#f7b6d2",
  block_io: "#ff9896", send: "#1f77b4", recv: "#aec7e8", tcp_state: "#2ca02c", span: "#2ca02c", error: "#c00000",
};
const SVGNS = "http://www.w3.org/2000/svg";

function svg(tag, attrs = {}) {
  const e = document.createElementNS(SVGNS, tag);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
  return e;
}

function niceStep(span) {
  const raw = span / 8, p = 10 ** Math.floor(Math.log10(raw));
  for (const m of [1, 2, 5, 10]) if (m * p >= raw) return m * p;
  return 10 * p;
}

export async function showTimeline(view, params, isCurrent) {
  let pid = params.get("pid") || "";
  let from = params.get("from"), to = params.get("to");
  if (!from || !to) {
    const ext = await get("/extent", pid ? { pid: pid.split(",")[0] } : {});
    if (!ext.from) { view.replaceChildren(el("p", {}, "nothing recorded yet")); return; }
    from = ext.from; to = ext.to;
  }
  const st = { from: BigInt(from), to: BigInt(to), seq: 0, timer: 0, data: null };

  const range = el("span", { id: "tl-range" });
  const status = el("span", { id: "tl-status", class: "muted" });
  const fromIn = el("input", { id: "tl-from", size: "21", title: "UTC ns since the epoch" });
  const toIn = el("input", { id: "tl-to", size: "21", title: "UTC ns since the epoch" });
  const pidIn = el("input", { id: "tl-pid", size: "18", value: pid, placeholder: "pids (all: busiest)" });
  const details = el("div", { id: "tl-details", class: "card details" }, "Click a slice for its details.");
  const box = el("div", { class: "tl-box", id: "timeline" });
  const canvas = el("canvas", { class: "tl-canvas" });
  const plot = svg("svg", { class: "tl-svg", id: "tl-svg" });
  box.append(canvas, plot);

  const zoomBy = (factor, fx = 0.5) => {
    const span = Number(st.to - st.from);
    const ns = Math.max(MIN_SPAN, Math.round(span * factor));
    const start = st.from + BigInt(Math.round(fx * span - fx * ns));
    setRange(start, start + BigInt(ns));
  };
  const pan = (frac) => {
    const d = BigInt(Math.round(Number(st.to - st.from) * frac));
    setRange(st.from + d, st.to + d);
  };
  const toolbar = el("div", { class: "toolbar" },
    el("button", { id: "zoom-in", title: "zoom in", onclick: () => zoomBy(0.5) }, "+"),
    el("button", { id: "zoom-out", title: "zoom out", onclick: () => zoomBy(2) }, "−"),
    el("button", { title: "earlier", onclick: () => pan(-0.25) }, "←"),
    el("button", { title: "later", onclick: () => pan(0.25) }, "→"),
    el("form", { id: "tl-range-form", class: "inline", onsubmit: (e) => {
      e.preventDefault();
      try { setRange(BigInt(fromIn.value.trim()), BigInt(toIn.value.trim())); } catch { status.textContent = "from/to: ns since the epoch"; }
    } }, " from ", fromIn, " to ", toIn, el("button", { type: "submit" }, "Go")),
    el("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); pid = pidIn.value.replace(/\s+/g, ""); schedule(0); } },
      " pids ", pidIn, el("button", { type: "submit" }, "Apply")));
  view.replaceChildren(el("section", { class: "card" }, el("h2", {}, "Timeline"), toolbar,
    el("p", {}, range, " ", status), box, details));

  function setRange(a, b) {
    if (b - a < BigInt(MIN_SPAN)) b = a + BigInt(MIN_SPAN);
    st.from = a; st.to = b;
    schedule(60);
  }

  function schedule(ms) {
    clearTimeout(st.timer);
    st.timer = setTimeout(load, ms);
  }

  async function load() {
    if (!isCurrent()) return;
    const seq = ++st.seq;
    const route = `#/timeline?from=${st.from}&to=${st.to}${pid ? "&pid=" + pid : ""}`;
    if (location.hash !== route) history.replaceState(null, "", route);   // the shareable URL of this view
    fromIn.value = String(st.from); toIn.value = String(st.to);
    const span = Number(st.to - st.from);
    range.textContent = `${utc(st.from)} + ${dur(span)}`;
    range.dataset.spanNs = String(span);
    const width = Math.max(100, Math.min(4000, Math.round(box.clientWidth - LABEL_W)));
    const t0 = performance.now();
    let data;
    try {
      data = await get("/timeline", { from: st.from, to: st.to, width, pid });
    } catch (e) {
      if (e.status === 401) throw e;      // the router asks for the token
      status.textContent = e.message;
      return;
    }
    if (seq !== st.seq || !isCurrent()) return;
    const t1 = performance.now();
    draw(data, width);
    const t2 = performance.now();
    st.data = data;
    const timing = { server_ms: data.took_ms, fetch_ms: +(t1 - t0).toFixed(1), render_ms: +(t2 - t1).toFixed(1),
      from: data.from, to: data.to, items: data.items.length, buckets: data.buckets.b.length, lanes: data.lanes.length };
    window.__kprobeTimeline = timing;
    (window.__kprobeTimings ||= []).push(timing);
    status.textContent = `server ${data.took_ms} ms · round trip ${timing.fetch_ms} ms · render ${timing.render_ms} ms · ` +
      `${timing.items} slices · ${timing.buckets} sums${data.truncated ? " · zoom in for more" : ""}`;
    box.dataset.loaded = String(seq);
  }

  function draw(data, W) {
    const span = Number(BigInt(data.to) - BigInt(data.from));
    const x = (t) => LABEL_W + (Math.min(Math.max(t, 0), span) / span) * W;
    const rowsOf = data.lanes.map(() => new Set());
    for (const it of data.items) rowsOf[it.lane].add(it.row);
    data.buckets.lane.forEach((l, i) => rowsOf[l].add(data.buckets.row[i]));
    const laneY = [], rowY = [];
    let y = AXIS_H;
    data.lanes.forEach((_, i) => {
      const rows = data.rows.filter((r) => rowsOf[i].has(r));
      laneY.push(y);
      rowY.push(Object.fromEntries(rows.map((r, k) => [r, y + LANE_PAD / 2 + k * ROW_H])));
      y += Math.max(1, rows.length) * ROW_H + LANE_PAD;
    });
    const H = Math.max(y, AXIS_H + 40);
    const total = LABEL_W + W;
    plot.setAttribute("width", total); plot.setAttribute("height", H);
    box.style.height = `${H}px`;
    plot.setAttribute("viewBox", `0 0 ${total} ${H}`);
    canvas.width = total; canvas.height = H;
    const g = canvas.getContext("2d");
    g.clearRect(0, 0, total, H);
    plot.replaceChildren();
    // axis
    const step = niceStep(span);
    for (let t = 0; t <= span; t += step) {
      plot.append(svg("line", { x1: x(t), x2: x(t), y1: AXIS_H - 4, y2: H, class: "tick" }));
      const label = svg("text", { x: x(t) + 2, y: 12, class: "tick-label" });
      label.textContent = `+${dur(t)}`;
      plot.append(label);
    }
    // lanes
    data.lanes.forEach((ln, i) => {
      const name = ln.process || ln.comm || "?";
      const t = svg("text", { x: 4, y: laneY[i] + 12, class: "lane-label", "data-lane": i });
      t.textContent = `${name} ${ln.tgid}/${ln.tid}${ln.comm && ln.comm !== name ? " " + ln.comm : ""}`;
      plot.append(svg("line", { x1: 0, x2: total, y1: laneY[i], y2: laneY[i], class: "lane-sep" }), t);
    });
    // per-pixel sums on the canvas
    const bw = Math.max(1, (data.bucket_ns / span) * W);
    const B = data.buckets;
    for (let i = 0; i < B.b.length; i++) {
      const ry = rowY[B.lane[i]][B.row[i]];
      if (ry === undefined) continue;
      const busy = B.busy_ns[i] / data.bucket_ns;
      g.globalAlpha = Math.min(1, busy > 0 ? 0.25 + busy : 0.3 + B.n[i] / 10);
      g.fillStyle = COLORS[B.cls[i]] || "#666";
      // buckets are cells of absolute time: the first may begin before `from` (bucket0_ns <= 0)
      const bx = LABEL_W + ((data.bucket0_ns + B.b[i] * data.bucket_ns) / span) * W;
      g.fillRect(Math.max(LABEL_W, bx), ry + 1, bw - Math.max(0, LABEL_W - bx), ROW_H - 2);
    }
    g.globalAlpha = 1;
    // drawable slices as SVG
    const frag = document.createDocumentFragment();
    data.items.forEach((it, i) => {
      const ry = rowY[it.lane][it.row];
      const x0 = x(it.t0), x1 = Math.max(x(it.t1), x0 + 1);
      const gr = svg("g", { class: "item", "data-kind": it.kind, "data-cls": it.cls, "data-lane": it.lane, "data-i": i,
        "data-ts": it.ts, "data-tgid": data.lanes[it.lane].tgid, "data-tid": data.lanes[it.lane].tid });
      if (it.tw !== undefined && it.tw > it.t0) {
        const xw = x(it.tw);
        gr.append(svg("rect", { x: x0, y: ry + 1, width: Math.max(0, xw - x0), height: ROW_H - 2, fill: COLORS[it.cls] || "#888" }));
        gr.append(svg("rect", { x: xw, y: ry + 1, width: Math.max(1, x1 - xw), height: ROW_H - 2, fill: COLORS.runq, class: "runq" }));
      } else {
        gr.append(svg("rect", { x: x0, y: ry + 1, width: x1 - x0, height: ROW_H - 2, fill: COLORS[it.cls] || "#888" }));
      }
      const tt = svg("title");
      tt.textContent = it.text;
      gr.append(tt);
      if (x1 - x0 > 60) {
        const lbl = svg("text", { x: x0 + 3, y: ry + ROW_H - 3, class: "item-label" });
        lbl.textContent = it.text.slice(0, Math.floor((x1 - x0) / 6));
        gr.append(lbl);
      }
      frag.append(gr);
    });
    plot.append(frag);
  }

  function task(a, role) {
    const comm = a[`${role}_comm`], proc = a[`${role}_process`];
    if (!a[`${role}_tid`]) return "";
    return `${comm}${proc && proc !== comm ? ` (${proc})` : ""} PID ${a[`${role}_tgid`]} TID ${a[`${role}_tid`]}`;
  }

  async function showDetails(it) {
    const ln = st.data.lanes[it.lane];
    const rows = [["what", it.text], ["thread", `${ln.process || ln.comm} ${ln.tgid}/${ln.tid}`],
      ["start", utc(it.ts)], ["duration", dur(it.t1 - it.t0)]];
    const links = [];
    if (it.kind === "span") {
      rows.push(["span", it.span_id], ["trace", it.trace_id]);
      links.push(el("a", { href: `#/incident/span-${it.span_id}` }, "explain this span"), " · ",
        el("a", { href: `#/trace/${it.trace_id}` }, `trace ${it.trace_id}`));
    } else {
      // the slice's full row, in `kprobe events`' words, from the events endpoint
      const res = await get("/events", { pid: ln.tgid, type: it.kind, from: it.ts, to: it.ts, limit: 200 });
      const r = res.items.find((x) => String(x.tid) === String(ln.tid) && String(x.ts) === it.ts) || res.items[0];
      if (r) {
        rows[0] = ["what", r.text];
        if (it.kind === "offcpu") {
          // who kept it off the CPU, as `kprobe why` counts it: the task that switched in over it when it
          // was preempted, else the task that held its CPU while it waited in the run queue after wake-up.
          // The task it displaced at the end held the CPU only since displaced_since: when that is a small
          // part of the wait (a softirq thread cutting in last), the task that took the CPU when it left
          // (same CPU) is the one that kept it, and both are said.
          const held = r.runq_ns > 0 && task(r, "displaced");
          const heldNs = held && Number(r.displaced_since) > 0 ? Number(r.end_ts) - Number(r.displaced_since) : null;
          const mostly = held && (heldNs === null || heldNs * 2 >= Number(r.runq_ns));
          const took = String(r.cpu_off) === String(r.cpu_on) && Number(r.preemptor_tid) > 0 && task(r, "preemptor");
          const by = r.reason === "preempted" ? task(r, "preemptor")
            : mostly ? `${held} (held CPU ${r.cpu_on} during the ${dur(r.runq_ns)} run-queue wait)`
            : held && took ? `${took} (took CPU ${r.cpu_on} when it left; ${held} held it only the last ${dur(heldNs)} ` +
              `of the ${dur(r.runq_ns)} run-queue wait)`
            : held ? `${held} (held CPU ${r.cpu_on} the last ${dur(heldNs)} of the ${dur(r.runq_ns)} run-queue wait)` : "";
          rows.push(["reason", `${r.reason}${r.syscall ? " in " + r.syscall : ""} (${it.cls})`],
            ["preemptor", by || "—"], ["woken by", task(r, "waker") || "—"],
            ["switched in when it left", task(r, "preemptor") || "—"],
            ["ran instead (run queue)", task(r, "displaced") || "—"], ["run-queue wait", dur(r.runq_ns)],
            ["CPU", `${r.cpu_off} → ${r.cpu_on}`]);
        }
      }
    }
    details.replaceChildren(el("table", { class: "kv", "data-kind": it.kind },
      rows.map(([k, v]) => el("tr", { "data-key": k }, el("th", {}, k), el("td", {}, v)))), el("p", {}, links));
    details.dataset.shown = it.ts;
  }

  plot.addEventListener("click", (e) => {
    const gr = e.target.closest("g.item");
    if (gr && st.data) showDetails(st.data.items[Number(gr.dataset.i)]).catch((err) => { details.textContent = err.message; });
  });
  plot.addEventListener("wheel", (e) => {
    e.preventDefault();
    const W = plot.clientWidth - LABEL_W;
    const fx = Math.min(1, Math.max(0, (e.offsetX - LABEL_W) / W));
    zoomBy(e.deltaY < 0 ? 0.5 : 2, fx);
  }, { passive: false });
  let dragX = null;
  plot.addEventListener("mousedown", (e) => { dragX = e.clientX; });
  window.addEventListener("mouseup", (e) => {
    if (dragX === null) return;
    const dx = e.clientX - dragX;
    dragX = null;
    if (Math.abs(dx) > 3) pan(-dx / (plot.clientWidth - LABEL_W));
  });
  await load();
}

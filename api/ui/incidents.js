// The incident list: `kprobe incidents`, newest first, paged with the API's cursor.
import { get } from "/ui/api.js";
import { dur, el, utc } from "/ui/format.js";

export async function showIncidents(view, params) {
  const slow = params.get("slow_ms") || "500";
  const table = el("table", { id: "incidents" },
    el("thead", {}, el("tr", {}, ["ended (UTC)", "incident", "process", "what", "took", "error"].map((h) => el("th", {}, h)))));
  const body = el("tbody");
  table.append(body);
  const more = el("button", { id: "more", hidden: "" }, "More");
  const slowInput = el("input", { id: "slow_ms", type: "number", min: "1", value: slow, size: "6" });
  view.replaceChildren(el("section", { class: "card" },
    el("h2", {}, "Incidents"),
    el("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); location.hash = `#/incidents?slow_ms=${slowInput.value}`; } },
      "failed spans and operations slower than ", slowInput, " ms ", el("button", { type: "submit" }, "Apply")),
    table, more));
  let cursor = null;
  async function page() {
    const res = await get("/incidents", { slow_ms: slow, limit: 50, cursor });
    for (const i of res.items) {
      body.append(el("tr", { class: i.error ? "failed" : "" },
        el("td", {}, utc(i.end_ns)),
        el("td", {}, el("a", { href: `#/incident/${i.id}`, class: "incident-link" }, i.id)),
        el("td", {}, `${i.comm} PID ${i.pid}`), el("td", {}, i.what), el("td", {}, dur(i.duration_ns)),
        el("td", {}, i.error)));
    }
    if (!res.items.length && !cursor) body.append(el("tr", {}, el("td", { colspan: "6" }, "no incidents above the threshold")));
    cursor = res.next_cursor;
    more.hidden = !cursor;
  }
  more.addEventListener("click", page);
  await page();
}

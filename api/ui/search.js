// Search: one match opens directly; several are listed with what they are.
import { get } from "/ui/api.js";
import { el } from "/ui/format.js";

export async function showSearch(view, q) {
  document.getElementById("q").value = q;
  const res = await get("/search", { q });
  if (res.matches.length === 1) {
    history.replaceState(null, "", "#" + res.matches[0].route);
    window.dispatchEvent(new HashChangeEvent("hashchange"));
    return;
  }
  view.replaceChildren(el("section", { class: "card", id: "search-results" },
    el("h2", {}, `Search: ${q}`),
    res.matches.length ? el("ul", {}, res.matches.map((m) => el("li", {}, `${m.kind}: `, el("a", { href: "#" + m.route }, m.label))))
      : el("p", {}, "nothing matches (trace id: 32 hex digits, span id: 16, pid: a number, or a span attribute value)")));
}

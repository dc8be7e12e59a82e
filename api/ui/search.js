// Search: one match opens directly; several are listed with what they are.
// A payment or order id is also found as the attribute of its spans: the business match is the answer
// then (its view leads to the spans and the root cause), the attribute matches only say where it was seen.
import { get } from "/ui/api.js";
import { el } from "/ui/format.js";

function direct(matches) {
  if (matches.length === 1) return matches[0];
  const business = matches.filter((m) => m.kind === "payment" || m.kind === "order");
  const others = matches.filter((m) => m.kind !== "attribute" && !business.includes(m));
  return business.length === 1 && !others.length ? business[0] : null;
}

export async function showSearch(view, q) {
  document.getElementById("q").value = q;
  const res = await get("/search", { q });
  const one = direct(res.matches);
  if (one) {
    history.replaceState(null, "", "#" + one.route);
    window.dispatchEvent(new HashChangeEvent("hashchange"));
    return;
  }
  view.replaceChildren(el("section", { class: "card", id: "search-results" },
    el("h2", {}, `Search: ${q}`),
    res.matches.length ? el("ul", {}, res.matches.map((m) => el("li", {}, `${m.kind}: `, el("a", { href: "#" + m.route }, m.label))))
      : el("p", {}, "nothing matches (trace id: 32 hex digits, span id: 16, pid: a number, a payment or order id, " +
                    "or a span attribute value)")));
}

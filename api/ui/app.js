// Hash router: every view is a URL (#/incident/ID, #/payment/ID, #/timeline?from=..&to=..&pid=..), so any view can be shared.
// Plain ES modules, no build step: see README "Web UI" for why.
import { ApiError, setToken, takeTokenFromFragment } from "/ui/api.js";
import { showBusiness } from "/ui/business.js";
import { el } from "/ui/format.js";
import { showIncident } from "/ui/incident.js";
import { showIncidents } from "/ui/incidents.js";
import { showSearch } from "/ui/search.js";
import { showTimeline } from "/ui/timeline.js";
import { showTrace } from "/ui/trace.js";

const view = document.getElementById("view");

export function navigate(route) { location.hash = "#" + route; }

function parse() {
  const h = location.hash.replace(/^#/, "") || "/incidents";
  const [path, qs] = h.split("?");
  return { parts: path.split("/").filter(Boolean).map(decodeURIComponent), params: new URLSearchParams(qs || "") };
}

function tokenPrompt(message) {
  const input = el("input", { id: "token", type: "password", placeholder: "contents of DATA/api-token", size: "50" });
  view.replaceChildren(el("section", { class: "card" },
    el("h2", {}, "Token needed"), el("p", {}, message),
    el("form", { onsubmit: (e) => { e.preventDefault(); setToken(input.value); route(); } },
      input, el("button", { type: "submit" }, "Use token"))));
}

let generation = 0;
async function route() {
  const mine = ++generation;
  const { parts, params } = parse();
  view.dataset.route = parts[0] || "incidents";
  try {
    if (parts[0] === "incident" && parts[1]) await showIncident(view, parts[1]);
    else if (parts[0] === "trace" && parts[1]) await showTrace(view, parts[1]);
    else if ((parts[0] === "payment" || parts[0] === "order") && parts[1]) await showBusiness(view, parts[0], parts[1]);
    else if (parts[0] === "timeline") await showTimeline(view, params, () => mine === generation);
    else if (parts[0] === "search") await showSearch(view, params.get("q") || "");
    else await showIncidents(view, params);
  } catch (e) {
    if (mine !== generation) return;
    if (e instanceof ApiError && e.status === 401) tokenPrompt(e.message);
    else view.replaceChildren(el("section", { class: "card error", id: "error" }, el("h2", {}, "Error"),
                                 el("p", {}, e.message || String(e))));
  }
}

document.getElementById("search").addEventListener("submit", (e) => {
  e.preventDefault();
  const q = document.getElementById("q").value.trim();
  if (q) navigate(`/search?q=${encodeURIComponent(q)}`);
});
takeTokenFromFragment();
window.addEventListener("hashchange", route);
route();

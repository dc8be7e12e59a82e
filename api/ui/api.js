// The API client: the bearer token (from the URL fragment once, then localStorage) on every request.
const KEY = "kprobe-token";

export function takeTokenFromFragment() {
  const m = location.hash.match(/^#token=([A-Za-z0-9_-]+)(.*)$/);
  if (!m) return;
  localStorage.setItem(KEY, m[1]);
  // never leave the token in the address bar: a shared link must not carry it
  history.replaceState(null, "", location.pathname + (m[2].startsWith("#") ? m[2] : "#/incidents"));
}

export function setToken(t) { localStorage.setItem(KEY, t.trim()); }

export class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

export async function get(path, params = {}) {
  const qs = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== undefined && v !== null && v !== "") qs.set(k, String(v));
  const url = `/api/v1${path}${qs.toString() ? "?" + qs : ""}`;
  const res = await fetch(url, { headers: { Authorization: `Bearer ${localStorage.getItem(KEY) || ""}` } });
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new ApiError(res.status, body.error?.code || "error", body.error?.message || res.statusText);
  return body;
}

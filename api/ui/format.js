// Durations and UTC timestamps as the CLI prints them (kprobe.query.timefmt).
export function dur(ns) {
  ns = Number(ns);
  if (ns >= 1e9) return `${(ns / 1e9).toFixed(3)} s`;
  if (ns >= 1e6) return `${(ns / 1e6).toFixed(3)} ms`;
  if (ns >= 1e3) return `${(ns / 1e3).toFixed(1)} µs`;
  return `${Math.round(ns)} ns`;
}

export function utc(nsBig) {
  const n = BigInt(nsBig);
  const sec = n / 1000000000n, frac = n % 1000000000n;
  return new Date(Number(sec) * 1000).toISOString().slice(0, 19) + "." + frac.toString().padStart(9, "0") + "Z";
}

export function el(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
}

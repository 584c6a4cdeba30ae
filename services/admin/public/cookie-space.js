// Draws one DeviceFile's cookie space (its MapleTree entries from GET /api/v1/device-files/ID)
// as an SVG on a segmented log axis: every entry and every gap between entries is one segment
// whose width grows with log2 of its size, so a 4 KiB alias and a 16 MiB region are both visible
// in a 2^64 space. Boundaries carry their offsets in hex. A table lists the same ranges as text.
import { visible } from "./visible.js";

const SVG = "http://www.w3.org/2000/svg";
const SPACE_END = 1n << 64n;
const W = 1000;

/** "4 KiB", "16 MiB", "1 TiB"; exact when a multiple of the unit, else one decimal ("16.0 EiB"). */
export function formatBytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"];
  const big = BigInt(n);
  let f = Number(big);
  let i = 0;
  while (f >= 1024 && i < units.length - 1) {
    f /= 1024;
    i++;
  }
  const exact = big % 1024n ** BigInt(i) === 0n;
  return exact ? `${big / 1024n ** BigInt(i)} ${units[i]}` : `${f.toFixed(1)} ${units[i]}`;
}

export const hex = (n) => `0x${BigInt(n).toString(16)}`;

function log2(n) {
  const s = n.toString(2).length; // bit length: floor(log2)+1
  return Math.max(1, s);
}

/** Entries (sorted by start) -> segments covering [0, 2^64): entries and the gaps between them. */
export function segments(entries) {
  const out = [];
  let at = 0n;
  for (const e of entries) {
    const start = BigInt(e.start);
    const end = BigInt(e.last) + 1n;
    if (start > at) out.push({ kind: "gap", start: at, end: start });
    out.push({ ...e, kind: e.kind, start, end });
    at = end;
  }
  if (at < SPACE_END) out.push({ kind: "gap", start: at, end: SPACE_END });
  return out;
}

function el(name, attrs = {}, text) {
  const n = document.createElementNS(SVG, name);
  for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
  if (text !== undefined) n.textContent = visible(text);
  return n;
}

function fillOf(s) {
  if (s.kind === "gap") return "url(#gap-hatch)";
  if (s.kind === "region") return "#dbe7f5";
  return { WC: "#f6c28b", UC: "#cdb8ea", WB: "#bfe3c4" }[s.attribute] ?? "#dddddd";
}

function labelOf(s) {
  const size = formatBytes(s.end - s.start);
  if (s.kind === "gap") return { top: "free", bottom: size };
  if (s.kind === "region") return { top: s.regionName, bottom: size };
  return { top: `${s.regionName} ${s.attribute}`, bottom: size };
}

/** The SVG picture and a text table of `dump` (the /api/v1/device-files/ID answer). */
export function renderCookieSpace(dump) {
  const segs = segments(dump.entries);
  const weights = segs.map((s) => log2(s.end - s.start) + (s.kind === "mapping" ? 6 : 0));
  const total = weights.reduce((a, b) => a + b, 0);
  const frag = document.createDocumentFragment();

  const df = dump.deviceFile;
  const nMappings = dump.entries.filter((e) => e.kind === "mapping").length;
  const summary = `${dump.entries.length} entries (${nMappings} mapping${nMappings === 1 ? "" : "s"}), MapleTree depth ${dump.depth}, layout ${df.layout}`;
  const svg = el("svg", {
    viewBox: `0 0 ${W} 150`,
    class: "cookie-svg",
    role: "img",
    "aria-labelledby": "cs-title cs-desc",
  });
  svg.append(
    el("title", { id: "cs-title" }, `Cookie space of device file ${df.deviceFileId} (${df.deviceId})`),
    el(
      "desc",
      { id: "cs-desc" },
      `${summary}. Segmented log axis: each range and gap gets width by log2 of its size.`,
    ),
  );
  const defs = el("defs");
  const pat = el("pattern", {
    id: "gap-hatch",
    width: 6,
    height: 6,
    patternUnits: "userSpaceOnUse",
    patternTransform: "rotate(45)",
  });
  pat.append(
    el("rect", { width: 6, height: 6, fill: "#f0f0f0" }),
    el("line", { x1: 0, y1: 0, x2: 0, y2: 6, stroke: "#b5b5b5", "stroke-width": 2 }),
  );
  defs.append(pat);
  svg.append(defs);

  let x = 0;
  const y = 20;
  const h = 70;
  segs.forEach((s, i) => {
    const w = (weights[i] / total) * W;
    const g = el("g", { "data-kind": s.kind, "data-start": s.start.toString() });
    const rect = el("rect", {
      x: x.toFixed(2),
      y,
      width: Math.max(w, 1).toFixed(2),
      height: h,
      fill: fillOf(s),
      stroke: s.kind === "gap" ? "#9a9a9a" : "#222",
      "stroke-width": 1,
    });
    if (s.kind === "mapping" && s.state === "pending") rect.setAttribute("stroke-dasharray", "5 3");
    const label = labelOf(s);
    g.append(
      rect,
      el(
        "title",
        {},
        `${s.kind} ${hex(s.start)}–${hex(s.end - 1n)} (${formatBytes(s.end - s.start)})${s.kind === "mapping" ? `, ${s.attribute}, ${s.state}` : ""}`,
      ),
    );
    if (w > 44) {
      g.append(
        el(
          "text",
          { x: (x + w / 2).toFixed(2), y: y + 30, "text-anchor": "middle", "font-size": 13, fill: "#111" },
          label.top,
        ),
        el(
          "text",
          { x: (x + w / 2).toFixed(2), y: y + 50, "text-anchor": "middle", "font-size": 12, fill: "#333" },
          label.bottom,
        ),
      );
    }
    svg.append(g);
    // Boundary tick with its offset, alternating rows so neighbours do not overlap.
    svg.append(
      el("line", {
        x1: x.toFixed(2),
        y1: y + h,
        x2: x.toFixed(2),
        y2: y + h + (i % 2 ? 22 : 8),
        stroke: "#555",
      }),
    );
    if (w > 30 || i === 0)
      svg.append(
        el(
          "text",
          { x: (x + 2).toFixed(2), y: y + h + (i % 2 ? 34 : 20), "font-size": 11, fill: "#333" },
          hex(s.start),
        ),
      );
    x += w;
  });
  svg.append(
    el("text", { x: W - 2, y: y + h + 20, "text-anchor": "end", "font-size": 11, fill: "#333" }, "2^64"),
  );
  svg.append(el("text", { x: 0, y: 13, "font-size": 12, fill: "#333" }, summary));
  frag.append(svg);

  const legend = document.createElement("p");
  legend.className = "legend";
  legend.setAttribute("aria-hidden", "true");
  for (const [cls, text] of [
    ["l-region", "region (compat range)"],
    ["l-wc", "mapping WC"],
    ["l-uc", "mapping UC"],
    ["l-wb", "mapping WB"],
    ["l-pending", "pending (fd not delivered)"],
    ["l-gap", "gap (free)"],
  ]) {
    const s = document.createElement("span");
    s.className = cls;
    s.textContent = visible(text);
    legend.append(s);
  }
  frag.append(legend);

  const table = document.createElement("table");
  const cap = document.createElement("caption");
  cap.textContent = `Ranges of device file ${df.deviceFileId}`;
  table.append(cap);
  const head = table.createTHead().insertRow();
  for (const t of ["Kind", "Start", "Last", "Size", "Region", "Attribute", "State"]) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = t;
    head.append(th);
  }
  const body = table.createTBody();
  for (const s of segs) {
    const r = body.insertRow();
    const cells = [
      s.kind,
      hex(s.start),
      hex(s.end - 1n),
      formatBytes(s.end - s.start),
      s.kind === "gap" ? "" : s.regionName,
      s.kind === "mapping" ? s.attribute : "",
      s.kind === "mapping" ? s.state : "",
    ];
    for (const c of cells) {
      const td = r.insertCell();
      td.textContent = visible(c);
      if (c.startsWith("0x")) td.className = "mono";
    }
  }
  frag.append(table);
  return frag;
}

// Test support: the attacker's web page for admin-browser.test.ts. Its script fires, for
// `durationMs`, every kind of request a page can make without the token and without a CORS
// preflight: no-cors fetch POSTs (no body, so no Content-Type: what drained a device before),
// text/plain form POSTs into hidden iframes, sendBeacon, and preflighted DELETEs; then it tries
// to read API answers (possible only same-origin, i.e. after DNS rebinding). It counts what it
// did in window.__attack. `bases` are the admin origins it targets ("" = its own origin).

export interface AttackConfig {
  bases: string[];
  /** POST targets (paths). */
  posts: string[];
  /** DELETE targets (paths). */
  deletes: string[];
  /** GET targets whose answer the page tries to read. */
  reads: string[];
  durationMs: number;
}

export function attackPage(cfg: AttackConfig): string {
  // The script is inline and the page has no CSP: it is the attacker's, not ours.
  return `<!doctype html><html><head><meta charset="utf-8"><title>totally harmless</title></head><body>
<p>Nothing to see here.</p>
<iframe name="sink0" hidden></iframe><iframe name="sink1" hidden></iframe><iframe name="sink2" hidden></iframe>
<script type="application/json" id="cfg">${JSON.stringify(cfg).replaceAll("<", "\\u003c")}</script>
<script>
(async () => {
  const cfg = JSON.parse(document.getElementById("cfg").textContent);
  const out = { fetches: 0, fetchErrors: 0, deletes: 0, deleteErrors: 0, forms: 0, beacons: 0, rounds: 0, reads: [], done: false };
  window.__attack = out;
  const post = (url) => fetch(url, { method: "POST", mode: "no-cors", cache: "no-store" })
    .then(() => { out.fetches++; }, () => { out.fetchErrors++; });
  const del = (url) => fetch(url, { method: "DELETE" })
    .then(() => { out.deletes++; }, () => { out.deleteErrors++; });
  const form = (url, i) => {
    const f = document.createElement("form");
    f.method = "POST"; f.action = url; f.enctype = "text/plain"; f.target = "sink" + (i % 3);
    document.body.append(f); f.submit(); f.remove(); out.forms++;
  };
  const end = Date.now() + cfg.durationMs;
  let i = 0;
  while (Date.now() < end) {
    const batch = [];
    for (const b of cfg.bases) {
      for (const p of cfg.posts) {
        batch.push(post(b + p));
        if (navigator.sendBeacon(b + p)) out.beacons++;
        if (out.rounds % 10 === 0) form(b + p, i++);
      }
      for (const p of cfg.deletes) batch.push(del(b + p));
    }
    await Promise.all(batch);
    out.rounds++;
  }
  for (const b of cfg.bases)
    for (const p of cfg.reads) {
      try {
        const r = await fetch(b + p);
        out.reads.push(r.status + " " + (await r.text()).slice(0, 300));
      } catch (e) {
        out.reads.push("unreadable: " + e.message);
      }
    }
  out.done = true;
})();
</script></body></html>`;
}

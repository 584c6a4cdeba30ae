// The vfio-broker console: polls the admin REST API every second and renders devices, sessions,
// device files (with a picture of the selected one's cookie space), mappings and the policy.
// Revoke / drain buttons ask for confirmation first. The token comes from #token=... or a form,
// and lives in sessionStorage only. All brokerd data is inserted as text (never as HTML).
import { formatBytes, hex, renderCookieSpace } from "./cookie-space.js";
import { visible } from "./visible.js";

const POLL_MS = 1000;
const TOKEN_KEY = "vfio-broker-admin-token";
const $ = (id) => document.getElementById(id);

let token = "";
let selectedDeviceFile = "";
let timer = 0;
const lastRendered = new Map();

class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

async function api(path, init = {}) {
  let res;
  try {
    res = await fetch(`/api/v1${path}`, {
      ...init,
      headers: {
        authorization: `Bearer ${token}`,
        ...(init.body ? { "content-type": "application/json" } : {}),
      },
    });
  } catch {
    throw new ApiError(0, "the admin service is unreachable (is vfio-broker-admin running?)");
  }
  const body = await res.json().catch(() => ({}));
  if (!res.ok) throw new ApiError(res.status, body.message ?? `${res.status} ${res.statusText}`);
  return body;
}

// ---- small DOM helpers ------------------------------------------------------------------------

function h(tag, attrs = {}, ...children) {
  const n = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === false) continue;
    if (k === "class") n.className = v;
    else if (k === "title") n.setAttribute(k, visible(v));
    else if (k.startsWith("data-") || k.startsWith("aria-") || k === "type" || k === "scope")
      n.setAttribute(k, v);
    else n[k] = v;
  }
  // Text is inserted as text, with hidden and reordering characters shown (visible.js).
  for (const c of children) if (c !== undefined && c !== null) n.append(c instanceof Node ? c : visible(c));
  return n;
}

const badge = (text) => h("span", { class: `badge ${text}` }, text);

function table(caption, columns, rows) {
  const t = h("table");
  t.append(h("caption", { class: "visually-hidden" }, caption));
  const head = t.createTHead().insertRow();
  for (const c of columns) head.append(h("th", { scope: "col", class: c.num ? "num" : "" }, c.label));
  const body = t.createTBody();
  for (const r of rows) {
    const tr = body.insertRow();
    if (r.selected) tr.className = "selected";
    r.cells.forEach((cell, i) => {
      tr.append(h("td", { class: columns[i]?.num ? "num" : "" }, cell));
    });
  }
  return t;
}

/** Replaces a section's content only when its data changed (keeps focus and scroll otherwise). */
function render(id, data, build) {
  const key = JSON.stringify(data);
  if (lastRendered.get(id) === key) return;
  const focused = document.activeElement?.dataset?.key;
  lastRendered.set(id, key);
  const target = $(id);
  target.replaceChildren(build(data));
  if (focused) target.querySelector(`[data-key="${CSS.escape(focused)}"]`)?.focus();
}

const since = (ms) => {
  const s = Math.max(0, Math.round((Date.now() - Number(ms)) / 1000));
  return s < 120
    ? `${s} s ago`
    : s < 7200
      ? `${Math.round(s / 60)} min ago`
      : `${Math.round(s / 3600)} h ago`;
};

// ---- sections ---------------------------------------------------------------------------------

// The mode switch: brokerd refuses it (and says who holds the device) while anything is open on it.
function modeButton(d) {
  const to = d.mode === "vfio" ? "sysfs-wc" : "vfio";
  return h(
    "button",
    {
      type: "button",
      class: "secondary",
      "data-action": "mode",
      "data-device": d.id,
      "data-mode": to,
      "data-key": `mode-${d.id}`,
      disabled: d.health === "gone",
    },
    `Serve ${d.id} in ${to}`,
  );
}

function devicesView({ devices }) {
  if (!devices.length) return h("p", { class: "empty" }, "brokerd has no devices.");
  const frag = document.createDocumentFragment();
  frag.append(
    table(
      "Devices",
      [
        { label: "Device" },
        { label: "Backend" },
        { label: "Description" },
        { label: "Health" },
        { label: "Mode" },
        { label: "Regions" },
        { label: "Actions" },
      ],
      devices.map((d) => ({
        cells: [
          h("code", {}, d.id),
          d.backend,
          d.description,
          badge(d.health),
          h(
            "span",
            { "data-mode": d.mode },
            badge(d.mode),
            ...(d.modeNotes ?? []).map((n) => h("div", { class: "note" }, n)),
          ),
          h(
            "ul",
            { class: "regions" },
            ...d.regions.map((r) =>
              h(
                "li",
                {},
                `${r.name}: ${formatBytes(r.size)}${r.prefetchable ? ", prefetchable" : ""}${r.mappable ? "" : ", not mappable"} — `,
                ...r.attributes.flatMap((a) => [badge(a), " "]),
              ),
            ),
          ),
          h(
            "span",
            { class: "actions" },
            modeButton(d),
            " ",
            d.health === "draining"
              ? h(
                  "button",
                  {
                    type: "button",
                    class: "secondary",
                    "data-action": "undrain",
                    "data-device": d.id,
                    "data-key": `undrain-${d.id}`,
                  },
                  `Undrain ${d.id}`,
                )
              : h(
                  "button",
                  {
                    type: "button",
                    class: "danger",
                    "data-action": "drain",
                    "data-device": d.id,
                    "data-key": `drain-${d.id}`,
                    disabled: d.health === "gone",
                  },
                  `Drain ${d.id}`,
                ),
          ),
        ],
      })),
    ),
  );
  return frag;
}

// Container and pod as brokerd read them from the cgroup path: the runtime and the short id (the
// full id on hover, as `docker ps` shows it), the pod UID and its QoS class.
function containerCell(id) {
  if (!id?.containerId) return "—";
  return h(
    "span",
    { title: id.containerId, "data-container-id": id.containerId },
    `${id.containerRuntime || "container"} `,
    h("code", {}, id.containerId.slice(0, 12)),
  );
}

function podCell(id) {
  if (!id?.podUid) return "—";
  return h(
    "span",
    { "data-pod-uid": id.podUid },
    h("code", {}, id.podUid),
    id.qosClass ? ` (${id.qosClass})` : "",
  );
}

function sessionsView({ sessions }) {
  if (!sessions.length) return h("p", { class: "empty" }, "No client is connected.");
  return table(
    "Sessions",
    [
      { label: "Session" },
      { label: "Client" },
      { label: "uid", num: true },
      { label: "gid", num: true },
      { label: "pid", num: true },
      { label: "cgroup" },
      { label: "Container" },
      { label: "Pod" },
      { label: "Device files", num: true },
      { label: "Mappings", num: true },
      { label: "Mapped", num: true },
      { label: "Lease" },
      { label: "Connected" },
      { label: "Actions" },
    ],
    sessions.map((s) => ({
      cells: [
        h("code", {}, s.sessionId),
        s.clientName || "—",
        s.identity?.uid ?? "",
        s.identity?.gid ?? "",
        s.identity?.pid ?? "",
        h("code", {}, s.identity?.cgroup || "—"),
        containerCell(s.identity),
        podCell(s.identity),
        s.deviceFiles,
        s.mappings,
        formatBytes(s.bytesMapped),
        s.leaseActive ? "active" : "none",
        since(s.connectedUnixMs),
        h(
          "button",
          {
            type: "button",
            class: "danger",
            "data-action": "revoke-session",
            "data-session": s.sessionId,
            "data-key": `rs-${s.sessionId}`,
          },
          "Revoke session",
        ),
      ],
    })),
  );
}

function deviceFilesView({ deviceFiles }) {
  if (!deviceFiles.length) return h("p", { class: "empty" }, "No device file is open.");
  return table(
    "Device files",
    [
      { label: "Id", num: true },
      { label: "Device" },
      { label: "Session" },
      { label: "Layout" },
      { label: "Mappings", num: true },
      { label: "Opened" },
      { label: "Cookie space" },
    ],
    deviceFiles.map((f) => ({
      selected: f.deviceFileId === selectedDeviceFile,
      cells: [
        f.deviceFileId,
        h("code", {}, f.deviceId),
        h("code", {}, f.sessionId),
        f.layout,
        f.mappings,
        since(f.openedUnixMs),
        h(
          "button",
          {
            type: "button",
            class: "secondary",
            "data-action": "select-df",
            "data-df": f.deviceFileId,
            "data-key": `sel-${f.deviceFileId}`,
            "aria-pressed": String(f.deviceFileId === selectedDeviceFile),
          },
          `Show cookie space of ${f.deviceFileId}`,
        ),
      ],
    })),
  );
}

function mappingsView({ mappings }) {
  if (!mappings.length) return h("p", { class: "empty" }, "No live mappings.");
  return table(
    "Mappings",
    [
      { label: "Cookie" },
      { label: "Device file", num: true },
      { label: "Device" },
      { label: "Region" },
      { label: "Offset" },
      { label: "Length", num: true },
      { label: "Attribute" },
      { label: "Prot" },
      { label: "Backing" },
      { label: "State" },
      { label: "Revocation" },
      { label: "uid / pid" },
      { label: "Actions" },
    ],
    mappings.map((m) => ({
      cells: [
        h("code", { title: m.cookie }, hex(m.cookie)),
        m.deviceFileId,
        h("code", {}, m.deviceId),
        m.regionName,
        h("code", {}, hex(m.regionOffset)),
        formatBytes(m.length),
        h(
          "span",
          {},
          badge(m.effectiveAttribute),
          m.requestedAttribute !== m.effectiveAttribute
            ? ` (asked ${m.requestedAttribute}: ${m.fallbackReason})`
            : "",
        ),
        m.prot,
        m.backing,
        badge(m.state),
        revocationCell(m.revocation),
        `${m.identity?.uid ?? "?"} / ${m.identity?.pid ?? "?"}`,
        h(
          "button",
          {
            type: "button",
            class: "danger",
            "data-action": "revoke-mapping",
            "data-df": m.deviceFileId,
            "data-cookie": m.cookie,
            "data-label": `${m.deviceId} ${m.regionName} ${m.effectiveAttribute} ${formatBytes(m.length)} (cookie ${hex(m.cookie)}, device file ${m.deviceFileId})`,
            "data-revoking": m.state === "revoking" ? "1" : "",
            "data-what": m.revocation?.description ?? "",
            "data-key": `rm-${m.deviceFileId}-${m.cookie}-${m.state}`,
          },
          m.state === "revoking" ? "Enforce revocation" : "Revoke mapping",
        ),
      ],
    })),
  );
}

/** What a revocation does (kind), with the full description as a tooltip; for revoked ones, where it stands. */
function revocationCell(r) {
  if (!r) return "";
  const kind = r.kind === "immediate" ? "frees pages at once" : "asks holder to unmap";
  let stand = "";
  if (r.revokedReason)
    stand = r.enforced
      ? "; holder killed, pages freed at its exit"
      : r.enforceAtUnixMs
        ? `; kill at ${new Date(r.enforceAtUnixMs).toLocaleTimeString()} (${r.enforceBy})`
        : "; pages booked until it unmaps or exits";
  else if (r.policyEnforce === "kill") stand = `; policy kills after ${r.policyGraceMs} ms`;
  return h("span", { title: r.description }, kind + stand);
}

function policyView(health) {
  return h(
    "dl",
    {},
    h("dt", {}, "Source"),
    h("dd", {}, h("code", {}, health.policy.source)),
    h("dt", {}, "Digest"),
    h("dd", {}, h("code", {}, health.policy.digest.slice(0, 16))),
    h("dt", {}, "Rules"),
    h("dd", {}, health.policy.rules),
  );
}

// ---- polling ----------------------------------------------------------------------------------

function setBanner(text) {
  const b = $("banner");
  if (!text) {
    b.hidden = true;
    document.body.classList.remove("stale");
    return;
  }
  if (b.textContent !== visible(text)) b.textContent = visible(text);
  b.hidden = false;
  document.body.classList.add("stale");
}

async function refresh() {
  try {
    const [health, devices, sessions, deviceFiles, mappings] = await Promise.all([
      api("/health"),
      api("/devices"),
      api("/sessions"),
      api("/device-files"),
      api("/mappings"),
    ]);
    setBanner("");
    $("summary").textContent = visible(
      `brokerd ${health.version} ${health.status} · ${health.sessions} sessions · ${health.deviceFiles} device files · ` +
        `${health.mappings} mappings · backends ${health.backends.join(", ")}`,
    );
    render("devices-body", devices, devicesView);
    render("sessions-body", sessions, sessionsView);
    if (selectedDeviceFile && !deviceFiles.deviceFiles.some((f) => f.deviceFileId === selectedDeviceFile))
      selectedDeviceFile = "";
    if (!selectedDeviceFile && deviceFiles.deviceFiles.length)
      selectedDeviceFile = deviceFiles.deviceFiles[0].deviceFileId;
    render("device-files-body", { ...deviceFiles, selectedDeviceFile }, deviceFilesView);
    render("mappings-body", mappings, mappingsView);
    render("policy-body", health, policyView);
    await refreshCookieSpace();
  } catch (e) {
    if (e.status === 401) {
      askToken(e.message);
      return;
    }
    setBanner(
      e.status === 503
        ? `brokerd is unreachable: ${e.message}. Showing the last known state; retrying every second.`
        : e.message,
    );
  }
}

async function refreshCookieSpace() {
  const section = $("cookie-space");
  if (!selectedDeviceFile) {
    section.hidden = true;
    lastRendered.delete("cookie-space-body");
    return;
  }
  try {
    const dump = await api(`/device-files/${selectedDeviceFile}`);
    section.hidden = false;
    $("cookie-space-h").textContent = visible(
      `Cookie space of device file ${selectedDeviceFile} (${dump.deviceFile.deviceId})`,
    );
    render(
      "cookie-space-body",
      { entries: dump.entries, depth: dump.depth, deviceFile: dump.deviceFile },
      renderCookieSpace,
    );
  } catch (e) {
    if (e.status === 404) selectedDeviceFile = "";
    else throw e;
  }
}

function loop() {
  clearTimeout(timer);
  void refresh().finally(() => {
    if (token) timer = setTimeout(loop, POLL_MS);
  });
}

// ---- actions ----------------------------------------------------------------------------------

/** Opens the confirmation dialog; resolves to the reason, or null if cancelled. */
/**
 * Asks for confirmation and a reason; with `enforce`, also whether to kill a holder that does not
 * unmap (and after how long). Resolves { reason, enforce, graceMs }, or null when cancelled.
 */
function confirmAction(text, okLabel, { enforce = false, enforced = false } = {}) {
  const dialog = $("confirm");
  $("confirm-text").textContent = visible(text);
  $("confirm-ok").textContent = okLabel;
  $("confirm-reason").value = "";
  $("confirm-enforce-box").hidden = !enforce;
  $("confirm-enforce").checked = enforced;
  $("confirm-grace").value = "5000";
  dialog.returnValue = "";
  dialog.showModal();
  $("confirm-cancel").focus();
  return new Promise((resolve) => {
    dialog.addEventListener(
      "close",
      () => {
        if (dialog.returnValue !== "ok") return resolve(null);
        const on = enforce && $("confirm-enforce").checked;
        const grace = Number.parseInt($("confirm-grace").value, 10);
        resolve({
          reason: $("confirm-reason").value,
          ...(on ? { enforce: true, graceMs: Number.isFinite(grace) && grace >= 0 ? grace : 5000 } : {}),
        });
      },
      { once: true },
    );
  });
}

function say(text, error = false) {
  const s = $("status");
  s.textContent = visible(text);
  s.classList.toggle("error", error);
}

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;
const revokedText = (r) =>
  `${plural(r.revoked.mappingsRevoked, "mapping")} revoked, ${plural(r.revoked.deviceFilesClosed, "device file")} closed, ${plural(r.revoked.sessionsEnded, "session")} ended` +
  (r.revoked.mappingsHeld
    ? `; ${plural(r.revoked.mappingsHeld, "mapping")} still held: the holder was asked to unmap, its pages stay booked until it releases them or exits`
    : "");

async function onAction(ev) {
  const btn = ev.target.closest("button[data-action]");
  if (!btn) return;
  const d = btn.dataset;
  try {
    switch (d.action) {
      case "select-df":
        selectedDeviceFile = d.df;
        lastRendered.delete("device-files-body");
        await refresh();
        $("cookie-space").scrollIntoView({ block: "nearest" });
        return;
      case "revoke-mapping": {
        const answer = await confirmAction(
          d.revoking
            ? `The mapping ${d.label} is revoked, but its holder has not unmapped it: ${d.what}. Kill the holder?`
            : `Revoke the mapping ${d.label}? Its lease is told why. What happens: ${d.what || "the holder is asked to unmap it"}.`,
          d.revoking ? "Enforce revocation" : "Revoke mapping",
          { enforce: true, enforced: !!d.revoking },
        );
        if (answer === null) return;
        const r = await api(`/device-files/${d.df}/mappings/${d.cookie}/revoke`, {
          method: "POST",
          body: JSON.stringify(answer),
        });
        say(revokedText(r));
        break;
      }
      case "revoke-session": {
        const answer = await confirmAction(
          `Revoke session ${d.session}? The session ends; what it has not received yet is released. brokerd cannot unmap what its process has mapped: those pages stay booked until the process unmaps them or exits, unless you enforce the revocation.`,
          "Revoke session",
          { enforce: true },
        );
        if (answer === null) return;
        const r = await api(`/sessions/${d.session}/revoke`, {
          method: "POST",
          body: JSON.stringify(answer),
        });
        say(revokedText(r));
        break;
      }
      case "drain": {
        const answer = await confirmAction(
          `Drain ${d.device}? Every mapping on it is revoked (its holders are asked to unmap; the pages stay booked until they do or exit) and no new device file may open until you undrain it.`,
          `Drain ${d.device}`,
        );
        if (answer === null) return;
        const { reason } = answer;
        const r = await api(`/devices/${encodeURIComponent(d.device)}/drain`, {
          method: "POST",
          body: JSON.stringify({ reason }),
        });
        say(`${d.device} drained: ${revokedText(r)}`);
        break;
      }
      case "mode": {
        const answer = await confirmAction(
          `Serve ${d.device} in mode ${d.mode}? brokerd closes its files of the device and opens it afresh ` +
            `(${d.mode === "vfio" ? "through VFIO: the device is reset" : "through sysfs only: no VFIO device fd"}). ` +
            "It refuses while any device file or held mapping is on the device. Until brokerd restarts; the configuration decides after.",
          `Serve in ${d.mode}`,
        );
        if (answer === null) return;
        const r = await api(`/devices/${encodeURIComponent(d.device)}/mode`, {
          method: "POST",
          body: JSON.stringify({ mode: d.mode, reason: answer.reason }),
        });
        say(`${d.device} is served in mode ${r.device.mode} now (was ${r.previousMode})`);
        break;
      }
      case "undrain":
        await api(`/devices/${encodeURIComponent(d.device)}/undrain`, { method: "POST", body: "{}" });
        say(`${d.device} is available again`);
        break;
    }
  } catch (e) {
    say(e.message, true);
  }
  loop();
}

async function reloadPolicy() {
  try {
    const r = await api("/policy/reload", { method: "POST", body: "{}" });
    say(`policy reloaded: ${r.rules} rules, digest ${r.digest.slice(0, 16)}`);
  } catch (e) {
    say(`policy NOT reloaded: ${e.message}`, true);
  }
  loop();
}

// ---- token ------------------------------------------------------------------------------------

function askToken(message = "") {
  token = "";
  sessionStorage.removeItem(TOKEN_KEY);
  clearTimeout(timer);
  $("app").hidden = true;
  $("token-section").hidden = false;
  $("token-error").textContent = visible(message);
  $("token-input").focus();
}

function useToken(t) {
  token = t.trim();
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token-section").hidden = true;
  $("app").hidden = false;
  lastRendered.clear();
  loop();
}

function start() {
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromHash) {
    sessionStorage.setItem(TOKEN_KEY, fromHash);
    history.replaceState(null, "", location.pathname + location.search);
  }
  $("token-form").addEventListener("submit", (e) => {
    e.preventDefault();
    useToken($("token-input").value);
    $("token-input").value = "";
  });
  $("forget-token").addEventListener("click", () => askToken("Token forgotten."));
  $("reload-policy").addEventListener("click", reloadPolicy);
  $("app").addEventListener("click", onAction);
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) useToken(saved);
  else askToken();
}

start();

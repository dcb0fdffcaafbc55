// The hub's dashboard: the fleet page and a gateway's page, drawn from /ui/api/*.
// No framework: the fleet table draws only the rows in view, so 10,000 gateways cost
// what 40 do; charts are SVG polylines.
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
const main = document.getElementById("main");

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== null && v !== undefined) e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

async function api(method, path, body) {
  const opts = { method, headers: { "X-CSRF-Token": CSRF }, credentials: "same-origin" };
  if (body !== undefined) {
    opts.headers["Content-Type"] = "application/json";
    opts.body = JSON.stringify(body);
  }
  const r = await fetch(path, opts);
  if (r.status === 401) {
    location.href = "/ui/login";
    throw new Error("signed out");
  }
  const text = await r.text();
  if (!r.ok) throw new Error(text.trim() || r.statusText);
  return text ? JSON.parse(text) : null;
}

function ago(ms, now) {
  if (ms === null || ms === undefined) return "never";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  if (s < 86400) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
}

function notice(where, text, ok) {
  where.textContent = text;
  where.className = ok ? "notice ok" : "notice error";
}

document.getElementById("logout").addEventListener("click", async () => {
  try { await api("POST", "/ui/logout"); } finally { location.href = "/ui/login"; }
});

// ---------------------------------------------------------------- fleet page

const COLUMNS = [
  ["id", "ID", d => d.id],
  ["sn", "Serial", d => d.sn],
  ["model", "Model", d => d.model],
  ["online", "State", d => (d.online ? 1 : 0)],
  ["last_seen_ms", "Last seen", d => d.last_seen_ms || 0],
  ["engine_version", "Agent", d => d.engine_version || ""],
  ["apps", "Apps", d => d.apps.map(a => a[0]).join(" ")],
  ["backlog", "Backlog", d => (d.backlog === null ? -1 : d.backlog)],
  ["faults", "Faults", d => d.faults],
];
const ROW_H = 28;

function appText(a) {
  return a[0] + (a[1] ? "@" + a[1] : "") + " " + (a[2] || "?");
}

function searchText(d) {
  return [d.sn, d.model, d.vendor, d.status, d.engine_version || "", d.online ? "online" : "offline",
    d.faults ? "faults" : "", ...d.apps.map(appText)].join(" ").toLowerCase();
}

async function fleetPage() {
  const t0 = performance.now();
  const data = await api("GET", "/ui/api/fleet");
  const tFetched = performance.now();
  // Rows come as arrays (a third of the bytes of objects); name their cells once.
  const cols = data.columns;
  const all = data.rows.map(r => {
    const d = {};
    for (let i = 0; i < cols.length; i++) d[cols[i]] = r[i];
    d._q = searchText(d);
    return d;
  });
  let shown = all, sortKey = "id", sortDir = 1;

  const count = el("span", { id: "fleet-count", class: "muted" });
  const filter = el("input", { id: "fleet-filter", type: "search", placeholder: "Filter: serial, model, version, app, online/offline, faults…" });
  const head = el("div", { class: "row head" }, COLUMNS.map(([key, label]) =>
    el("span", { class: "c-" + key, "data-key": key, onclick: () => sortBy(key) }, label)));
  const spacer = el("div", { class: "spacer" });
  const rows = el("div", { class: "rows" });
  const body = el("div", { class: "scroll", id: "fleet-rows" }, spacer, rows);
  const msg = el("p", { class: "notice", id: "whitelist-msg" });
  const wl = el("form", { class: "inline", id: "whitelist" },
    el("input", { name: "vendor", placeholder: "vendor", required: "" }),
    el("input", { name: "model", placeholder: "model", required: "" }),
    el("input", { name: "sn", placeholder: "serial", required: "" }),
    el("button", { type: "submit" }, "Whitelist"));
  wl.addEventListener("submit", async ev => {
    ev.preventDefault();
    const f = new FormData(wl);
    try {
      const d = await api("POST", "/ui/api/devices", { vendor: f.get("vendor"), model: f.get("model"), sn: f.get("sn") });
      notice(msg, "Whitelisted " + d.vendor + "/" + d.model + "/" + d.sn + " as device " + d.id + ": it can activate now.", true);
      wl.reset();
    } catch (e) { notice(msg, e.message, false); }
  });

  main.replaceChildren(
    el("section", { class: "toolbar" }, filter, count),
    el("section", { class: "table" }, head, body),
    el("details", { class: "card" }, el("summary", {}, "Whitelist a new gateway"), wl, msg));

  function draw() {
    const first = Math.max(0, Math.floor(body.scrollTop / ROW_H) - 5);
    const n = Math.ceil(body.clientHeight / ROW_H) + 10;
    const now = data.now_ms;
    const out = [];
    for (let i = first; i < Math.min(shown.length, first + n); i++) {
      const d = shown[i];
      const r = el("a", { class: "row", href: "/ui/devices/" + d.id, style: "top:" + i * ROW_H + "px", "data-sn": d.sn },
        el("span", { class: "c-id" }, d.id),
        el("span", { class: "c-sn" }, d.sn),
        el("span", { class: "c-model" }, d.model),
        el("span", { class: "c-online" }, el("b", { class: d.online ? "on" : "off" }, d.online ? "online" : "offline")),
        el("span", { class: "c-last_seen_ms" }, ago(d.last_seen_ms, now)),
        el("span", { class: "c-engine_version" }, d.engine_version || "–"),
        el("span", { class: "c-apps", title: d.apps.map(appText).join("\n") },
          d.apps.map(a => el("i", { class: "app " + (a[2] || "").toLowerCase() }, a[0] + (a[1] ? " " + a[1] : "")))),
        el("span", { class: "c-backlog" }, d.backlog === null ? "–" : d.backlog),
        el("span", { class: "c-faults" + (d.faults ? " bad" : "") }, d.faults || ""));
      out.push(r);
    }
    rows.replaceChildren(...out);
  }
  function refresh() {
    const q = filter.value.trim().toLowerCase().split(/\s+/).filter(Boolean);
    shown = q.length ? all.filter(d => q.every(w => d._q.includes(w))) : all.slice();
    const col = COLUMNS.find(c => c[0] === sortKey)[2];
    shown.sort((a, b) => {
      const x = col(a), y = col(b);
      return (x < y ? -1 : x > y ? 1 : a.id - b.id) * sortDir;
    });
    for (const h of head.children) h.dataset.sort = h.dataset.key === sortKey ? (sortDir > 0 ? "asc" : "desc") : "";
    spacer.style.height = shown.length * ROW_H + "px";
    count.textContent = shown.length + " of " + all.length + " gateways, " + all.filter(d => d.online).length + " online";
    draw();
  }
  function sortBy(key) {
    sortDir = key === sortKey ? -sortDir : 1;
    sortKey = key;
    refresh();
  }
  let pending = false;
  body.addEventListener("scroll", () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; draw(); });
  });
  filter.addEventListener("input", refresh);
  const tPrepared = performance.now();
  refresh();
  const tDrawn = performance.now();
  // What the browser test reads: from navigation start to the rows on screen, and its parts
  // (the script starting, the API answering and parsed, the rows prepared, sorted and drawn).
  requestAnimationFrame(() => {
    const ms = Math.round(performance.now());
    const b = document.body.dataset;
    b.fleetRenderedMs = ms;
    b.fleetParts = [t0, tFetched - t0, tPrepared - tFetched, tDrawn - tPrepared].map(Math.round).join(" ");
    count.title = "rendered in " + ms + " ms";
  });
}

// ---------------------------------------------------------------- gateway page

function parse(v) {
  try { return JSON.parse(v); } catch (e) { return null; }
}

// A line chart: series is [{name, points: [[t, v], ...]}], t in unix seconds.
function chart(title, unit, series) {
  const W = 460, H = 150, L = 48, B = 18;
  const pts = series.flatMap(s => s.points);
  const box = el("figure", { class: "chart", "data-title": title });
  box.append(el("figcaption", {}, title));
  if (pts.length === 0) {
    box.append(el("p", { class: "muted" }, "no data yet"));
    return box;
  }
  const t0 = Math.min(...pts.map(p => p[0])), t1 = Math.max(...pts.map(p => p[0]));
  const vmax = Math.max(1, ...pts.map(p => p[1]));
  const x = t => L + (t1 === t0 ? (W - L) / 2 : (t - t0) / (t1 - t0) * (W - L - 4));
  const y = v => (H - B) - v / vmax * (H - B - 6);
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", "0 0 " + W + " " + H);
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.append(e);
    return e;
  };
  add("line", { x1: L, y1: H - B, x2: W, y2: H - B, class: "axis" });
  add("text", { x: L - 4, y: 12, class: "tick", "text-anchor": "end" }, fmt(vmax) + unit);
  add("text", { x: L - 4, y: H - B, class: "tick", "text-anchor": "end" }, "0");
  add("text", { x: L, y: H - 3, class: "tick" }, new Date(t0 * 1000).toLocaleTimeString());
  add("text", { x: W, y: H - 3, class: "tick", "text-anchor": "end" }, new Date(t1 * 1000).toLocaleTimeString());
  series.forEach((s, i) => {
    if (s.points.length === 0) return;
    add("polyline", { class: "line s" + (i % 6), points: s.points.map(p => x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1)).join(" ") });
  });
  box.append(svg, el("div", { class: "legend" }, series.map((s, i) => el("span", { class: "s" + (i % 6) }, s.name))));
  return box;
}

function fmt(v) {
  if (v >= 1e9) return (v / 1e9).toFixed(1) + "G";
  if (v >= 1e6) return (v / 1e6).toFixed(1) + "M";
  if (v >= 1e3) return (v / 1e3).toFixed(1) + "k";
  return String(Math.round(v));
}

// Telemetry series out of the reports' history.
function telemetry(series) {
  const info = series.device_info.map(([t, v]) => [t, parse(v)]).filter(p => p[1]);
  const usage = series.usage_report.map(([t, v]) => [t, parse(v)]).filter(p => p[1]);
  const engine = series.engine_report.map(([t, v]) => [t, parse(v)]).filter(p => p[1]);
  const mem = [
    { name: "available", points: info.filter(p => p[1].free).map(([t, v]) => [t, (v.free.available_kb || 0) * 1024]) },
    { name: "total", points: info.filter(p => p[1].free).map(([t, v]) => [t, (v.free.total_kb || 0) * 1024]) },
  ];
  const mounts = new Set(info.flatMap(([, v]) => (v.df || []).map(f => f.mount)));
  const disk = [...mounts].map(m => ({
    name: m, points: info.map(([t, v]) => [t, (v.df || []).find(f => f.mount === m)]).filter(p => p[1] && p[1].size_kb)
      .map(([t, f]) => [t, 100 * f.used_kb / f.size_kb]),
  }));
  const ifaces = new Set(usage.flatMap(([, v]) => Object.keys(v.interfaces || {})));
  const net = [...ifaces].map(i => ({
    name: i, points: usage.filter(p => (p[1].interfaces || {})[i]).map(([t, v]) => [t, v.interfaces[i].rx + v.interfaces[i].tx]),
  }));
  const apps = new Set(usage.flatMap(([, v]) => Object.keys(v.apps || {})));
  const perApp = [...apps].map(a => ({
    name: a, points: usage.map(([t, v]) => [t, ((v.apps || {})[a] || { tot_tx: 0 }).tot_tx]),
  }));
  const queue = [{ name: "backlog", points: engine.filter(p => p[1].queue).map(([t, v]) => [t, v.queue.backlog]) }];
  return [
    chart("Memory", "B", mem),
    chart("Disk used", "%", disk),
    chart("Bandwidth per interface (per report)", "B", net),
    chart("Bandwidth per app (per report)", "B", perApp),
    chart("Queue depth", "", queue),
  ];
}

async function devicePage(id) {
  const d = await api("GET", "/ui/api/devices/" + id);
  const dev = d.device;
  const now = Date.now();
  const msg = el("p", { class: "notice", id: "command-msg" });
  const report = parse((d.latest.engine_report || {}).value || "") || {};
  const apps = (report.apps || []).flatMap(o => Object.entries(o));
  const pkgs = d.packages.filter(p => /\.v[^/]+\.tar\.gz$/.test(p));
  const versionOf = p => p.replace(/^.*\.v/, "").replace(/\.tar\.gz$/, "");
  const nameOf = p => p.replace(/\.v[^/]*\.tar\.gz$/, "");
  const cmp = (a, b) => a.localeCompare(b, undefined, { numeric: true });

  async function send(cmd) {
    try {
      const r = await api("POST", "/ui/api/devices/" + id + "/command", cmd);
      notice(msg, "Sent: " + r.sent + ". Waiting for the gateway…", true);
      watch();
    } catch (e) { notice(msg, e.message, false); }
  }

  const appRows = apps.map(([name, a]) => {
    const older = pkgs.filter(p => nameOf(p) === name && a.version && cmp(versionOf(p), a.version) < 0).sort(cmp).pop();
    return el("tr", { "data-app": name },
      el("td", {}, name), el("td", {}, a.version || "–"),
      el("td", {}, el("b", { class: "state " + String(a.status).toLowerCase() }, a.status)),
      el("td", {}, a.uptime === undefined ? "" : String(a.uptime)),
      el("td", {},
        older ? el("button", { class: "rollback", onclick: () => send({ kind: "install", package: older }) }, "Roll back to " + versionOf(older)) : null,
        el("button", { class: "remove", onclick: () => confirm("Remove " + name + "?") && send({ kind: "remove", app: name }) }, "Remove")));
  });

  const pick = el("select", { id: "install-package" }, pkgs.sort(cmp).map(p => el("option", { value: p }, p)));
  const install = el("button", { id: "install", onclick: () => pick.value && send({ kind: "install", package: pick.value }) }, "Install");
  const cmdText = el("textarea", { id: "edge-command", rows: 5, spellcheck: "false" },
    JSON.stringify({ id: "ui-" + Date.now().toString(36), config: {} }, null, 1));
  const sendCmd = el("button", { id: "send-command", onclick: () => {
    const c = parse(cmdText.value);
    if (!c || typeof c !== "object") { notice(msg, "The command is not a JSON object.", false); return; }
    send({ kind: "edge", command: c });
  } }, "Send edge command");
  const control = d.control || {};
  const faults = report.faults || [];

  main.replaceChildren(
    el("h1", {}, dev.sn, " ", el("b", { class: d.online ? "on" : "off", id: "device-online" }, d.online ? "online" : "offline")),
    el("p", { class: "muted" }, dev.vendor + "/" + dev.model + " · device " + dev.id + " · " + dev.status +
      " · token " + (dev.token_hint ? dev.token_hint + "…" : "none") + " · last seen " + ago(dev.last_seen_ms, now) +
      " · agent " + (report.engine_version || "?"),
      " ", el("button", { id: "reenable", onclick: async () => {
        if (!confirm("Let " + dev.sn + " activate again? Its current token stops working.")) return;
        try { await api("POST", "/ui/api/devices/" + id + "/enable"); notice(msg, "Re-enabled: the gateway may activate again.", true); }
        catch (e) { notice(msg, e.message, false); }
      } }, "Re-enable")),
    msg,
    faults.length ? el("p", { class: "notice error" }, "Data partition faults: " + faults.map(f => f.part + ": " + f.error).join("; ")) : null,
    el("section", { class: "grid" },
      el("div", { class: "card" }, el("h2", {}, "Apps"),
        el("table", { id: "apps" }, el("tr", {}, ["App", "Version", "State", "Uptime", ""].map(h => el("th", {}, h))), appRows),
        el("p", {}, pick, " ", install)),
      el("div", { class: "card" }, el("h2", {}, "Control"),
        el("dl", {},
          el("dt", {}, "State"), el("dd", { id: "control-state" }, control.state || "–"),
          el("dt", {}, "Last command"), el("dd", { id: "control-last" }, control.last_command || "–"),
          el("dt", {}, "Pending"), el("dd", { id: "control-pending" }, control.pending || "–")),
        cmdText, el("p", {}, sendCmd)),
      el("div", { class: "card" }, el("h2", {}, "Recent fetch_status"),
        el("ol", { id: "fetch-status" }, d.fetch_status.map(([t, v]) =>
          el("li", {}, el("time", {}, new Date(t * 1000).toLocaleString()), " ", v.split("\n")[0]))))),
    el("section", { class: "charts", id: "charts" }, telemetry(d.series)));

  // After a command: reload the gateway's view until it changed (or 2 minutes passed).
  let watching = null;
  function watch() {
    if (watching) clearInterval(watching);
    const before = JSON.stringify([d.control, d.fetch_status[0], d.latest.engine_report]);
    let n = 0;
    watching = setInterval(async () => {
      n++;
      const fresh = await api("GET", "/ui/api/devices/" + id);
      const after = JSON.stringify([fresh.control, fresh.fetch_status[0], fresh.latest.engine_report]);
      if (after !== before || n > 60) {
        clearInterval(watching);
        const keep = msg.textContent;
        await devicePage(id);
        notice(document.getElementById("command-msg"), keep.replace("Waiting for the gateway…", "The gateway answered."), true);
      }
    }, 2000);
  }
}

// ---------------------------------------------------------------- rollouts

function counts(r) {
  return ["installed", "failed", "sent", "pending", "skipped"].filter(k => r.counts[k])
    .map(k => r.counts[k] + " " + k).join(", ");
}

async function rolloutsPage() {
  const list = await api("GET", "/ui/api/rollouts");
  const msg = el("p", { class: "notice", id: "rollout-msg" });
  const form = el("form", { class: "card", id: "new-rollout" },
    el("h2", {}, "New rollout"),
    el("p", { class: "inline" },
      el("input", { name: "name", placeholder: "name", required: "" }),
      el("input", { name: "package", placeholder: "NAME.vVER.tar.gz", required: "" }),
      el("input", { name: "vendor", placeholder: "vendor", required: "" }),
      el("input", { name: "model", placeholder: "model", required: "" }),
      el("input", { name: "serial_contains", placeholder: "serial contains (optional)" })),
    el("p", { class: "inline" },
      el("label", {}, "Stages (%) ", el("input", { name: "stages", value: "1, 10, 100", required: "" })),
      el("label", {}, "Pause above (% failed) ", el("input", { name: "max_failure_pct", value: "10", type: "number", min: "0", max: "100" })),
      el("button", { type: "submit", id: "start-rollout" }, "Start")),
    msg);
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    const f = new FormData(form);
    try {
      const r = await api("POST", "/ui/api/rollouts", {
        name: f.get("name"), package: f.get("package"), vendor: f.get("vendor"), model: f.get("model"),
        serial_contains: f.get("serial_contains") || "",
        stages: String(f.get("stages")).split(",").map(x => parseInt(x, 10)),
        max_failure_pct: parseInt(f.get("max_failure_pct"), 10),
      });
      location.href = "/ui/rollouts/" + r.id;
    } catch (e) { notice(msg, e.message, false); }
  });
  main.replaceChildren(
    el("h1", {}, "Rollouts"),
    el("table", { id: "rollouts" },
      el("tr", {}, ["Name", "Package", "Group", "Stage", "State", "Gateways"].map(h => el("th", {}, h))),
      list.map(r => el("tr", { "data-id": r.id },
        el("td", {}, el("a", { href: "/ui/rollouts/" + r.id }, r.name)), el("td", {}, r.package), el("td", {}, r.filter),
        el("td", {}, (r.stage + 1) + " of " + r.stages.length + " (" + r.stages.join(" / ") + " %)"),
        el("td", {}, el("b", { class: "state " + r.state }, r.state)), el("td", {}, counts(r))))),
    form);
}

async function rolloutPage(id) {
  const r = await api("GET", "/ui/api/rollouts/" + id);
  const msg = el("p", { class: "notice", id: "rollout-msg" });
  const act = a => async () => {
    try { await api("POST", "/ui/api/rollouts/" + id + "/" + a); await rolloutPage(id); }
    catch (e) { notice(msg, e.message, false); }
  };
  main.replaceChildren(
    el("h1", {}, r.name, " ", el("b", { class: "state " + r.state, id: "rollout-state" }, r.state)),
    el("p", { class: "muted" }, r.package + " to " + r.filter + " · stages " + r.stages.join(" / ") +
      " % · pauses above " + r.max_failure_pct + " % failed · stage " + (r.stage + 1) + " of " + r.stages.length),
    el("p", { id: "rollout-reason", class: r.state === "paused" ? "notice error" : "muted" }, r.reason),
    el("p", { id: "rollout-counts" }, counts(r)),
    el("p", {},
      r.state === "running" ? el("button", { id: "pause", onclick: act("pause") }, "Pause") : null,
      r.state === "paused" ? el("button", { id: "resume", onclick: act("resume") }, "Resume") : null,
      r.state === "running" || r.state === "paused" ? el("button", { id: "abort", onclick: act("abort") }, "Abort") : null),
    msg,
    el("table", { id: "rollout-devices" },
      el("tr", {}, ["Gateway", "Stage", "State", "Detail", "Updated"].map(h => el("th", {}, h))),
      r.devices.map(d => el("tr", { "data-sn": d.sn },
        el("td", {}, el("a", { href: "/ui/devices/" + d.device_id }, d.sn)), el("td", {}, d.stage + 1),
        el("td", {}, el("b", { class: "state " + d.state }, d.state)), el("td", {}, d.detail),
        el("td", {}, ago(d.updated_ms, Date.now()))))));
  // A running rollout moves by itself: look again every 2 s.
  if (r.state === "running") setTimeout(() => { if (location.pathname === "/ui/rollouts/" + id) rolloutPage(id); }, 2000);
}

// ---------------------------------------------------------------- routing

(async () => {
  try {
    const p = location.pathname;
    let m;
    if ((m = p.match(/^\/ui\/devices\/(\d+)$/))) await devicePage(m[1]);
    else if ((m = p.match(/^\/ui\/rollouts\/(\d+)$/))) await rolloutPage(m[1]);
    else if (p === "/ui/rollouts") await rolloutsPage();
    else await fleetPage();
  } catch (e) {
    main.replaceChildren(el("p", { class: "notice error" }, e.message));
  }
})();

// The hub's dashboard: the fleet page, a gateway's page, the rollouts and the audit log, drawn from
// /ui/api/*. No framework. The fleet table draws only the rows in view, so 10,000 gateways
// cost what 40 do; charts are SVG. The Content-Security-Policy forbids inline styles, so
// every position and size is set through the CSSOM (`e.style.top = ...`), never as a
// `style` attribute.
"use strict";

const CSRF = document.querySelector('meta[name="csrf-token"]').content;
/** viewer, operator or admin: controls beyond it are not drawn (`needs-operator`,
 * `needs-admin`, hidden by the style sheet); the hub refuses them anyway. */
const ROLE = document.body.dataset.role;
const main = document.getElementById("main");
/** How often a page asks the hub again (the fleet, a gateway, a rollout under way). */
const REFRESH_MS = 10000;

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v === true) e.setAttribute(k, "");
    else if (v !== null && v !== undefined && v !== false) e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return e;
}

/** Children for replaceChildren: what is null, undefined or false is left out (not "null"). */
function kids(...cs) {
  return cs.flat().filter(c => c !== null && c !== undefined && c !== false);
}

class ApiError extends Error {
  constructor(message, field) { super(message); this.field = field; }
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
    throw new ApiError("signed out");
  }
  const text = await r.text();
  if (!r.ok) {
    if ((r.headers.get("content-type") || "").startsWith("application/json")) {
      const e = JSON.parse(text);
      throw new ApiError(e.error, e.field);
    }
    throw new ApiError(text.trim() || r.statusText);
  }
  return text ? JSON.parse(text) : null;
}

function ago(ms, now) {
  if (ms === null || ms === undefined) return "never";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.floor(s / 60) + " min ago";
  if (s < 86400) return Math.floor(s / 3600) + " h ago";
  return Math.floor(s / 86400) + " d ago";
}

const DATE_TIME = { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" };
function when(ms) {
  return new Date(ms).toLocaleString(undefined, DATE_TIME);
}

function notice(where, text, ok) {
  where.textContent = text;
  where.className = ok ? "notice ok" : "notice error";
}

/** Shows an API error beside the form field it names, else in the form's notice. */
function formError(form, msg, e) {
  for (const x of form.querySelectorAll(".field-error")) x.textContent = "";
  for (const x of form.querySelectorAll("[aria-invalid]")) x.removeAttribute("aria-invalid");
  const input = e && e.field && form.querySelector('[name="' + e.field + '"]');
  if (input) {
    input.setAttribute("aria-invalid", "true");
    document.getElementById(input.getAttribute("aria-describedby")).textContent = e.message;
    input.focus();
    msg.textContent = "";
    msg.className = "notice";
  } else if (e) {
    notice(msg, e.message, false);
  }
}

/** A labelled form field with a place for its error: `<label>Text <input></label><span>`. */
function field(form, label, input) {
  const id = form + "-" + input.getAttribute("name");
  input.id = id;
  input.setAttribute("aria-describedby", id + "-error");
  return el("div", { class: "field" }, el("label", { for: id }, label), input,
    el("span", { class: "field-error", id: id + "-error", "aria-live": "polite" }));
}

/** Asks before a change; resolves true on "confirm". A modal dialog, keyboard usable. */
function confirmDialog(text, action) {
  return new Promise(resolve => {
    const yes = el("button", { id: "confirm-yes", class: "primary", value: "yes" }, action);
    const no = el("button", { id: "confirm-no", value: "no" }, "Cancel");
    const d = el("dialog", { id: "confirm", "aria-labelledby": "confirm-text" },
      el("form", { method: "dialog" }, el("p", { id: "confirm-text" }, text), el("p", { class: "inline" }, yes, no)));
    d.addEventListener("close", () => { d.remove(); resolve(d.returnValue === "yes"); });
    document.body.append(d);
    d.showModal();
    yes.focus();
  });
}

/** "Updated 4 s ago" for a page that refreshes itself; returns the function to call on each load. */
function freshness(span) {
  let at = Date.now();
  const tick = () => { span.textContent = "Updated " + ago(at, Date.now()); };
  const timer = setInterval(() => { if (!span.isConnected) clearInterval(timer); else tick(); }, 1000);
  tick();
  return ok => {
    if (ok) at = Date.now();
    span.classList.toggle("stale", !ok);
    tick();
    if (!ok) span.textContent += " (the hub did not answer; retrying)";
  };
}

/** Calls `load` every REFRESH_MS while `alive()` says the page is still shown. */
function every(ms, alive, load) {
  const t = setInterval(async () => {
    if (!alive()) { clearInterval(t); return; }
    await load();
  }, ms);
}

document.getElementById("logout").addEventListener("click", async () => {
  try { await api("POST", "/ui/logout"); } finally { location.href = "/ui/login"; }
});

// ---------------------------------------------------------------- fleet page

const appText = a => a[0] + (a[1] ? "@" + a[1] : "") + " " + (a[2] || "?");

// key, header, width, sort key, cell
const COLUMNS = {
  sn: ["Serial", "9em", d => d.sn, d => el("a", { href: "/ui/devices/" + d.id, class: "sn" }, d.sn)],
  id: ["ID", "4em", d => d.id, d => d.id],
  vendor: ["Vendor", "7em", d => d.vendor, d => d.vendor],
  model: ["Model", "7em", d => d.model, d => d.model],
  online: ["State", "6em", d => (d.online ? 1 : 0), d => el("b", { class: d.online ? "on" : "off" }, d.online ? "online" : "offline")],
  last_seen_ms: ["Last seen", "7em", d => d.last_seen_ms || 0, null],
  engine_version: ["Agent", "5em", d => d.engine_version || "", d => d.engine_version || "–"],
  apps: ["Apps", "minmax(12em, 1fr)", d => d.apps.map(a => a[0]).join(" "), d =>
    d.apps.length ? d.apps.map(a => el("i", { class: "app " + (a[2] || "").toLowerCase() }, a[0] + (a[1] ? " " + a[1] : ""))) : "none"],
  backlog: ["Backlog", "5em", d => (d.backlog === null ? -1 : d.backlog), d => (d.backlog === null ? "–" : d.backlog)],
  faults: ["Faults", "4em", d => d.faults, d => d.faults || ""],
  tags: ["Tags", "8em", d => d.tags.join(" "), d => d.tags.map(t => el("i", { class: "tag" }, t))],
  os: ["OS", "10em", d => d.os || "", d => d.os || "–"],
  kernel: ["Kernel", "9em", d => d.kernel || "", d => d.kernel || "–"],
  arch: ["Arch", "5em", d => d.arch || "", d => d.arch || "–"],
  addresses: ["Addresses", "10em", d => d.addresses || "", d => d.addresses || "–"],
  os_image: ["OS image", "13em", d => d.os_image || "", d => d.os_image || "–"],
};
const DEFAULT_COLUMNS = ["sn", "model", "online", "last_seen_ms", "engine_version", "os_image", "apps", "backlog", "faults", "tags"];
const ROW_H = 28;
/** A tag (the hub checks the same): no spaces, since the filter splits on them. */
const TAG = /^[A-Za-z0-9._-]{1,32}$/;

function savedColumns() {
  try {
    const c = JSON.parse(localStorage.getItem("gwe.columns"));
    if (Array.isArray(c) && c.length && c.every(k => COLUMNS[k])) return c;
  } catch (e) { /* the default */ }
  return DEFAULT_COLUMNS.slice();
}

/** The filter language (the hub applies the same rule to rollout groups): every term must
 *  match; `tag:NAME` a whole tag, any other term a part of the row's search text. */
function matcher(query) {
  const terms = query.trim().toLowerCase().split(/\s+/).filter(Boolean);
  if (!terms.length) return null;
  return d => terms.every(t => (t.startsWith("tag:") ? d._tags.has(t) : d.q.includes(t)));
}

async function fleetPage() {
  const t0 = performance.now();
  let data = await api("GET", "/ui/api/fleet");
  const tFetched = performance.now();
  let all = [], shown = [], sortKey = "sn", sortDir = 1, columns = savedColumns();
  let clock = { server: data.now_ms, local: Date.now() };
  const selected = new Set();
  const nowMs = () => clock.server + (Date.now() - clock.local);

  function load(d) {
    const cols = d.columns;
    all = d.rows.map(r => {
      const x = {};
      for (let i = 0; i < cols.length; i++) x[cols[i]] = r[i];
      x._tags = new Set(x.tags.map(t => "tag:" + t.toLowerCase()));
      return x;
    });
    clock = { server: d.now_ms, local: Date.now() };
    for (const id of [...selected]) if (!all.some(x => x.id === id)) selected.delete(id);
  }
  load(data);

  const count = el("span", { id: "fleet-count", class: "muted", role: "status" });
  const fresh = el("span", { id: "fleet-fresh", class: "muted" });
  const filter = el("input", { id: "fleet-filter", type: "search", name: "filter",
    placeholder: "serial, model, version, app, tag:NAME, online, offline, faults…" });
  const saved = el("select", { id: "saved-filters", "aria-label": "Saved filters" });
  const filterMsg = el("span", { class: "notice", id: "filter-msg", role: "status" });
  const saveName = el("input", { id: "filter-name", name: "name", placeholder: "name", maxlength: "40", "aria-describedby": "filter-name-error" });
  const saveForm = el("form", { id: "save-filter", class: "inline needs-operator" },
    el("label", { for: "filter-name" }, "Save the filter as"), saveName,
    el("span", { class: "field-error", id: "filter-name-error" }),
    el("input", { type: "hidden", name: "query" }),
    el("button", { type: "submit" }, "Save"),
    el("button", { type: "button", id: "delete-filter", onclick: deleteFilter }, "Delete the chosen filter"));
  const colsBox = el("details", { class: "menu", id: "columns-menu" }, el("summary", {}, "Columns"), el("div", { class: "menu-body", id: "columns-list" }));
  const head = el("div", { class: "row head", role: "row" });
  const spacer = el("div", { class: "spacer", role: "none" });
  const rows = el("div", { class: "rows", role: "none" });
  const empty = el("p", { class: "empty muted", id: "fleet-empty" });
  const body = el("div", { class: "scroll", id: "fleet-rows", role: "rowgroup" }, spacer, rows);
  const table = el("section", { class: "table", role: "table", "aria-label": "Gateways", id: "fleet-table" }, head, body);
  const bulkCount = el("span", { id: "bulk-count" });
  const bulkKind = el("select", { id: "bulk-action", name: "kind", "aria-label": "Action" },
    el("option", { value: "install" }, "Install package"), el("option", { value: "remove" }, "Remove app"),
    el("option", { value: "tag-add" }, "Add tag"), el("option", { value: "tag-remove" }, "Remove tag"),
    ROLE === "admin" ? el("option", { value: "enable" }, "Re-enable") : null);
  const bulkPkg = el("select", { id: "bulk-package", name: "package", "aria-label": "Package", "aria-describedby": "bulk-error" });
  const bulkArg = el("input", { id: "bulk-arg", name: "arg", "aria-label": "App or tag", placeholder: "app or tag", maxlength: "128", "aria-describedby": "bulk-error" });
  const bulkMsg = el("p", { class: "notice", id: "bulk-msg", role: "status" });
  const bulk = el("form", { id: "bulk", class: "card bulk needs-operator", hidden: true }, el("p", { class: "inline" },
    bulkCount, bulkKind, bulkPkg, bulkArg, el("button", { type: "submit", id: "bulk-apply" }, "Apply…"),
    el("button", { type: "button", id: "bulk-clear", onclick: () => { selected.clear(); draw(); } }, "Clear the selection"),
    el("span", { class: "field-error", id: "bulk-error" })), bulkMsg);
  const wlMsg = el("p", { class: "notice", id: "whitelist-msg", role: "status" });
  const wl = el("form", { class: "inline", id: "whitelist" },
    field("whitelist", "Vendor", el("input", { name: "vendor", required: true, maxlength: "128" })),
    field("whitelist", "Model", el("input", { name: "model", required: true, maxlength: "128" })),
    field("whitelist", "Serial", el("input", { name: "sn", required: true, maxlength: "128" })),
    el("button", { type: "submit" }, "Whitelist"));
  wl.noValidate = true;

  main.replaceChildren(
    el("h1", {}, "Fleet"),
    el("section", { class: "toolbar" }, el("label", { for: "fleet-filter" }, "Filter"), filter, saved, count, fresh, colsBox),
    el("details", { class: "card", id: "filters-box" }, el("summary", {}, "Saved filters"), saveForm, filterMsg),
    bulk, table, empty,
    el("details", { class: "card needs-admin", id: "whitelist-box" }, el("summary", {}, "Whitelist a new gateway"), wl, wlMsg));

  // -- columns: which, in what order; kept in this browser
  function drawHead() {
    table.style.setProperty("--cols", "2.2em " + columns.map(k => COLUMNS[k][1]).join(" "));
    const all = el("input", { type: "checkbox", id: "select-all", "aria-label": "Select every gateway shown", onchange: ev => {
      for (const d of shown) ev.target.checked ? selected.add(d.id) : selected.delete(d.id);
      draw();
    } });
    head.replaceChildren(el("span", { role: "columnheader", class: "c-select" }, all), ...columns.map(k => {
      const dir = k === sortKey ? (sortDir > 0 ? "ascending" : "descending") : "none";
      return el("span", { role: "columnheader", class: "c-" + k, "aria-sort": dir },
        el("button", { type: "button", class: "sort", "data-key": k, "data-sort": dir, onclick: () => sortBy(k) }, COLUMNS[k][0]));
    }));
    const list = document.getElementById("columns-list");
    const keys = [...columns, ...Object.keys(COLUMNS).filter(k => !columns.includes(k))];
    list.replaceChildren(...keys.map(k => {
      const on = columns.includes(k), i = columns.indexOf(k);
      return el("div", { class: "col-choice" },
        el("label", {}, el("input", { type: "checkbox", "data-col": k, checked: on, disabled: k === "sn", onchange: ev => {
          columns = ev.target.checked ? [...columns, k] : columns.filter(c => c !== k);
          setColumns(k);
        } }), " " + COLUMNS[k][0]),
        on ? el("button", { type: "button", "aria-label": "Move " + COLUMNS[k][0] + " left", disabled: i === 0,
          onclick: () => { columns.splice(i - 1, 0, columns.splice(i, 1)[0]); setColumns(k, "left"); } }, "←") : null,
        on ? el("button", { type: "button", "aria-label": "Move " + COLUMNS[k][0] + " right", disabled: i === columns.length - 1,
          onclick: () => { columns.splice(i + 1, 0, columns.splice(i, 1)[0]); setColumns(k, "right"); } }, "→") : null);
    }));
  }
  function setColumns(k, moved) {
    localStorage.setItem("gwe.columns", JSON.stringify(columns));
    drawHead();
    draw();
    const again = moved ? document.querySelector('#columns-list button[aria-label="Move ' + COLUMNS[k][0] + " " + moved + '"]')
      : document.querySelector('#columns-list input[data-col="' + k + '"]');
    if (again && !again.disabled) again.focus();
  }

  let painted = false;
  function draw() {
    const first = Math.max(0, Math.floor(body.scrollTop / ROW_H) - 5);
    const n = Math.ceil(body.clientHeight / ROW_H) + 10;
    const now = nowMs();
    const out = [];
    for (let i = first; i < Math.min(shown.length, first + n); i++) {
      const d = shown[i];
      const r = el("div", { class: "row", role: "row", "data-sn": d.sn, "aria-rowindex": i + 2 },
        el("span", { role: "cell", class: "c-select" }, el("input", { type: "checkbox", "aria-label": "Select " + d.sn,
          checked: selected.has(d.id), onchange: ev => { ev.target.checked ? selected.add(d.id) : selected.delete(d.id); drawBulk(); } })),
        columns.map(k => el("span", { role: "cell", class: "c-" + k, title: k === "apps" ? d.apps.map(appText).join("\n") : null },
          k === "last_seen_ms" ? el("time", { datetime: d.last_seen_ms ? new Date(d.last_seen_ms).toISOString() : null,
            title: d.last_seen_ms ? when(d.last_seen_ms) : null }, ago(d.last_seen_ms, now)) : COLUMNS[k][3](d))));
      r.style.top = i * ROW_H + "px";
      if (!painted) r.firstChild.nextSibling.setAttribute("elementtiming", "fleet-row");
      out.push(r);
    }
    // A row still shown keeps its element, and each cell whose content is the same keeps
    // its own: the refresh every few seconds must not take away the link a person is
    // clicking, the checkbox they tabbed to, or a screen reader's place.
    const old = new Map([...rows.children].map(r => [r.dataset.sn, r]));
    const final = out.map(r => {
      const o = old.get(r.dataset.sn);
      if (!o || o.children.length !== r.children.length) return r;
      o.style.top = r.style.top;
      o.setAttribute("aria-rowindex", r.getAttribute("aria-rowindex"));
      o.querySelector(".c-select input").checked = r.querySelector(".c-select input").checked;
      // Copies: a cell moved into the kept row leaves the new row's live list of children.
      const oc = [...o.children], rc = [...r.children];
      for (let j = 1; j < rc.length; j++) {
        const a = oc[j], b = rc[j];
        if (a.hasAttribute("elementtiming")) b.setAttribute("elementtiming", a.getAttribute("elementtiming"));
        if (a.outerHTML !== b.outerHTML) a.replaceWith(b);
      }
      return o;
    });
    const keep = new Set(final);
    for (const r of [...rows.children]) if (!keep.has(r)) r.remove();
    // The document's order is the screen's (a screen reader reads the former); a row moves
    // only when the order changed.
    final.forEach((r, i) => { if (rows.children[i] !== r) rows.insertBefore(r, rows.children[i] || null); });
    table.setAttribute("aria-rowcount", shown.length + 1);
    empty.textContent = all.length === 0 ? "No gateways yet. Whitelist one below: it appears here once it activates."
      : shown.length === 0 ? "No gateway matches the filter." : "";
    drawBulk();
  }
  function drawBulk() {
    bulk.hidden = selected.size === 0;
    bulkCount.textContent = selected.size + " selected";
    const sa = document.getElementById("select-all");
    if (sa) sa.checked = shown.length > 0 && shown.every(d => selected.has(d.id));
    bulkPkg.hidden = bulkKind.value !== "install";
    bulkArg.hidden = bulkKind.value === "install" || bulkKind.value === "enable";
  }
  function refresh() {
    const m = matcher(filter.value);
    shown = m ? all.filter(m) : all.slice();
    const col = COLUMNS[sortKey][2];
    shown.sort((a, b) => {
      const x = col(a), y = col(b);
      return (x < y ? -1 : x > y ? 1 : a.id - b.id) * sortDir;
    });
    spacer.style.height = shown.length * ROW_H + "px";
    count.textContent = shown.length + " of " + all.length + " gateways, " + all.filter(d => d.online).length + " online";
    draw();
  }
  function sortBy(key) {
    sortDir = key === sortKey ? -sortDir : 1;
    sortKey = key;
    drawHead();
    refresh();
    head.querySelector('button[data-key="' + key + '"]').focus();
  }

  // -- saved filters
  async function loadFilters(pick) {
    const list = await api("GET", "/ui/api/filters");
    saved.replaceChildren(el("option", { value: "" }, list.length ? "Saved filters…" : "No saved filters"),
      ...list.map(f => el("option", { value: f.query, "data-name": f.name }, f.name + ": " + f.query)));
    if (pick) saved.value = pick;
  }
  saved.addEventListener("change", () => { filter.value = saved.value; refresh(); });
  saveForm.addEventListener("submit", async ev => {
    ev.preventDefault();
    try {
      const f = await api("POST", "/ui/api/filters", { name: saveName.value, query: filter.value });
      notice(filterMsg, "Saved the filter " + f.name + ".", true);
      formError(saveForm, filterMsg, null);
      saveName.value = "";
      await loadFilters(f.query);
    } catch (e) {
      e.field = e.field === "query" ? "name" : e.field;
      formError(saveForm, filterMsg, e);
    }
  });
  async function deleteFilter() {
    const o = saved.selectedOptions[0];
    if (!o || !o.dataset.name) { notice(filterMsg, "Choose a saved filter first.", false); return; }
    if (!await confirmDialog("Delete the saved filter " + o.dataset.name + "?", "Delete")) return;
    try {
      await api("POST", "/ui/api/filters/" + encodeURIComponent(o.dataset.name) + "/delete");
      notice(filterMsg, "Deleted the filter " + o.dataset.name + ".", true);
      await loadFilters();
    } catch (e) { notice(filterMsg, e.message, false); }
  }

  // -- bulk actions
  let packages = [];
  bulkKind.addEventListener("change", drawBulk);
  bulk.addEventListener("submit", async ev => {
    ev.preventDefault();
    const ids = [...selected], n = ids.length, kind = bulkKind.value, arg = bulkArg.value.trim();
    document.getElementById("bulk-error").textContent = "";
    let action, what;
    if (kind === "install") {
      if (!bulkPkg.value) { document.getElementById("bulk-error").textContent = "Choose a package."; return; }
      action = { kind: "install", package: bulkPkg.value }; what = "Install " + bulkPkg.value + " on";
    } else if (kind === "enable") {
      action = { kind: "enable" }; what = "Re-enable (their tokens stop working)";
    } else {
      if (!arg) { document.getElementById("bulk-error").textContent = kind === "remove" ? "Type the app's name." : "Type a tag."; bulkArg.focus(); return; }
      if (kind !== "remove" && !TAG.test(arg)) { document.getElementById("bulk-error").textContent = "A tag is 1 to 32 letters, digits, '.', '_' or '-'."; bulkArg.focus(); return; }
      action = kind === "remove" ? { kind: "remove", app: arg } : kind === "tag-add" ? { kind: "tag", add: [arg] } : { kind: "tag", remove: [arg] };
      what = kind === "remove" ? "Remove the app " + arg + " from" : kind === "tag-add" ? "Tag with " + arg : "Untag " + arg + " from";
    }
    if (!await confirmDialog(what + " " + n + " gateway" + (n === 1 ? "" : "s") + "?", "Apply to " + n)) return;
    try {
      const r = await api("POST", "/ui/api/bulk", { ids, action });
      notice(bulkMsg, "Done on " + r.done + " gateway" + (r.done === 1 ? "" : "s") +
        (r.refused.length ? "; refused by " + r.refused.length + ": " + r.refused.map(x => x.sn + " (" + x.reason + ")").join(", ") : "") + ".", true);
      await reload();
    } catch (e) {
      document.getElementById("bulk-error").textContent = e.message;
    }
  });

  wl.addEventListener("submit", async ev => {
    ev.preventDefault();
    const f = new FormData(wl);
    const blank = ["vendor", "model", "sn"].find(k => !String(f.get(k)).trim());
    if (blank) {
      formError(wl, wlMsg, new ApiError("Type the gateway's " + (blank === "sn" ? "serial" : blank) + ".", blank));
      return;
    }
    try {
      const d = await api("POST", "/ui/api/devices", { vendor: f.get("vendor"), model: f.get("model"), sn: f.get("sn") });
      formError(wl, wlMsg, null);
      notice(wlMsg, "Whitelisted " + d.vendor + "/" + d.model + "/" + d.sn + " as device " + d.id + ": it can activate now.", true);
      wl.reset();
      await reload();
    } catch (e) { formError(wl, wlMsg, e); }
  });

  let pending = false;
  body.addEventListener("scroll", () => {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; draw(); });
  });
  // What the browser test reads of a filter: from the key to the frame that shows it.
  filter.addEventListener("input", ev => {
    const t = ev.timeStamp;
    refresh();
    requestAnimationFrame(() => setTimeout(() => { document.body.dataset.filterMs = Math.round(performance.now() - t); }, 0));
  });

  // What the browser test reads: when the first row was painted (Element Timing), and the
  // parts (script started, API answered and parsed, rows prepared, sorted and drawn).
  if (window.PerformanceObserver && PerformanceObserver.supportedEntryTypes.includes("element")) {
    new PerformanceObserver(list => {
      for (const e of list.getEntries()) {
        if (e.identifier === "fleet-row" && !document.body.dataset.fleetPaintMs) {
          document.body.dataset.fleetPaintMs = Math.round(e.renderTime || e.loadTime);
        }
      }
    }).observe({ type: "element", buffered: true });
  }
  const tPrepared = performance.now();
  drawHead();
  refresh();
  painted = true;
  const tDrawn = performance.now();
  requestAnimationFrame(() => {
    const b = document.body.dataset;
    b.fleetRenderedMs = Math.round(performance.now());
    b.fleetParts = [t0, tFetched - t0, tPrepared - tFetched, tDrawn - tPrepared].map(Math.round).join(" ");
  });

  const mark = freshness(fresh);
  async function reload() {
    try {
      load(await api("GET", "/ui/api/fleet"));
      refresh();
      mark(true);
    } catch (e) { mark(false); }
  }
  loadFilters().catch(e => notice(filterMsg, e.message, false));
  api("GET", "/ui/api/packages").then(p => {
    // OS bundles go out in rollouts (they reboot the gateway), not as a bulk install.
    packages = p.filter(x => x.kind !== "os");
    bulkPkg.replaceChildren(el("option", { value: "" }, packages.length ? "Choose a package…" : "The hub hosts no packages"),
      ...packages.map(x => el("option", { value: x.id }, x.id + " (" + x.vendor + "/" + x.model + ")")));
  }).catch(() => {});
  // Last seen ages on screen every second; the fleet is read again every REFRESH_MS.
  const alive = () => table.isConnected;
  every(1000, alive, async () => { if (!pending) draw(); });
  every(REFRESH_MS, alive, reload);
}

// ---------------------------------------------------------------- charts

function parse(v) {
  try { return JSON.parse(v); } catch (e) { return null; }
}

const UNITS = {
  bytes: v => fmtBytes(v), rate: v => fmtBytes(v) + "/s", pct: v => Math.round(v) + " %", records: v => fmtNum(v) + " rec",
};
const UNIT_NAMES = { bytes: "bytes", rate: "bytes per second", pct: "percent", records: "records" };

function fmtNum(v) {
  if (v >= 1e9) return +(v / 1e9).toFixed(1) + "G";
  if (v >= 1e6) return +(v / 1e6).toFixed(1) + "M";
  if (v >= 1e3) return +(v / 1e3).toFixed(1) + "k";
  return String(+v.toFixed(1));
}

function fmtBytes(v) {
  if (v >= 1 << 30) return +(v / (1 << 30)).toFixed(1) + " GiB";
  if (v >= 1 << 20) return +(v / (1 << 20)).toFixed(1) + " MiB";
  if (v >= 1024) return +(v / 1024).toFixed(1) + " KiB";
  return Math.round(v) + " B";
}

/** About `n` round steps from 0 to at least `max`. */
function niceTicks(max, n, binary) {
  if (max <= 0) max = 1;
  const base = binary ? 1024 : 10;
  const mag = Math.pow(base, Math.floor(Math.log(max / n) / Math.log(base)));
  const step = [1, 2, 2.5, 5, 10].map(m => m * mag).find(s => max / s <= n) || mag * 10;
  const out = [];
  for (let v = 0; v <= max + step * 0.001; v += step) out.push(v);
  if (out[out.length - 1] < max) out.push(out[out.length - 1] + step);
  return out;
}

const TIME_STEPS = [1, 2, 5, 10, 15, 30, 60, 300, 600, 1800, 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400, 2 * 86400, 7 * 86400];

// A line chart: series is [{name, points: [[t, v], ...]}], t in unix seconds.
function chart(title, unit, series) {
  const W = 480, H = 170, L = 64, R = 10, T = 10, B = 34;
  series = series.filter(s => s.points.length);
  const pts = series.flatMap(s => s.points);
  const box = el("figure", { class: "chart", "data-title": title });
  box.append(el("figcaption", {}, title + " (" + UNIT_NAMES[unit] + ")"));
  if (pts.length === 0) {
    box.append(el("p", { class: "muted" }, "No data yet."));
    return box;
  }
  let t0 = Math.min(...pts.map(p => p[0])), t1 = Math.max(...pts.map(p => p[0]));
  if (t1 === t0) { t0 -= 60; t1 += 60; }
  const yt = niceTicks(Math.max(...pts.map(p => p[1])), 4, unit === "bytes" || unit === "rate");
  const vmax = unit === "pct" ? Math.max(100, yt[yt.length - 1]) : yt[yt.length - 1];
  const ticksY = unit === "pct" ? [0, 25, 50, 75, 100] : yt;
  const x = t => L + (t - t0) / (t1 - t0) * (W - L - R);
  const y = v => H - B - v / vmax * (H - B - T);
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", "0 0 " + W + " " + H);
  svg.setAttribute("role", "img");
  const last = series.map(s => s.name + " " + UNITS[unit](s.points[s.points.length - 1][1])).join(", ");
  svg.setAttribute("aria-label", title + " from " + when(t0 * 1000) + " to " + when(t1 * 1000) + "; latest: " + last);
  const add = (tag, attrs, text) => {
    const e = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, v);
    if (text !== undefined) e.textContent = text;
    svg.append(e);
    return e;
  };
  for (const v of ticksY) {
    add("line", { x1: L, y1: y(v), x2: W - R, y2: y(v), class: v === 0 ? "axis" : "grid" });
    add("text", { x: L - 4, y: y(v) + 3, class: "tick", "text-anchor": "end" }, UNITS[unit](v));
  }
  const span = t1 - t0;
  const step = TIME_STEPS.find(s => span / s <= 4 && span / s >= 1) || TIME_STEPS.find(s => span / s <= 4) || 30 * 86400;
  const first = Math.ceil(t0 / step) * step;
  for (let t = first; t <= t1; t += step) {
    add("line", { x1: x(t), y1: H - B, x2: x(t), y2: H - B + 4, class: "axis" });
    const d = new Date(t * 1000);
    add("text", { x: x(t), y: H - B + 15, class: "tick", "text-anchor": "middle" },
      d.toLocaleTimeString(undefined, step < 60 ? { hour: "2-digit", minute: "2-digit", second: "2-digit" } : { hour: "2-digit", minute: "2-digit" }));
    add("text", { x: x(t), y: H - B + 27, class: "tick", "text-anchor": "middle" },
      d.toLocaleDateString(undefined, { month: "short", day: "numeric" }));
  }
  series.forEach((s, i) => {
    add("polyline", { class: "line s" + (i % 6), points: s.points.map(p => x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1)).join(" ") });
  });
  // Hover: a guide at the nearest report and every series' value there.
  const guide = add("line", { x1: 0, y1: T, x2: 0, y2: H - B, class: "guide", visibility: "hidden" });
  const readout = el("p", { class: "readout muted", "aria-hidden": "true" }, "\u00a0");
  const area = add("rect", { x: L, y: T, width: W - L - R, height: H - B - T, class: "hover" });
  const times = [...new Set(pts.map(p => p[0]))].sort((a, b) => a - b);
  area.addEventListener("mousemove", ev => {
    const r = svg.getBoundingClientRect();
    const tx = t0 + ((ev.clientX - r.left) / r.width * W - L) / (W - L - R) * (t1 - t0);
    const t = times.reduce((a, b) => (Math.abs(b - tx) < Math.abs(a - tx) ? b : a));
    guide.setAttribute("x1", x(t)); guide.setAttribute("x2", x(t)); guide.setAttribute("visibility", "visible");
    readout.textContent = when(t * 1000) + ": " + series.map(s => {
      const p = s.points.find(q => q[0] === t);
      return p ? s.name + " " + UNITS[unit](p[1]) : null;
    }).filter(Boolean).join(", ");
  });
  area.addEventListener("mouseleave", () => { guide.setAttribute("visibility", "hidden"); readout.textContent = "\u00a0"; });
  box.append(svg, readout, el("div", { class: "legend" }, series.map((s, i) => el("span", { class: "s" + (i % 6) }, s.name))));
  return box;
}

/** Mounts that hold none of the gateway's data (the agent leaves them out too). */
const pseudo = m => /^\/(dev|proc|run|sys)(\/|$)/.test(m);

/** Per-second rates from per-report deltas: each delta over the time since the report
 *  before it. The first report has no interval, so it gives no point. */
function rates(reports, pick) {
  const out = [];
  for (let i = 1; i < reports.length; i++) {
    const dt = reports[i][0] - reports[i - 1][0];
    const v = pick(reports[i][1]);
    if (dt > 0 && v !== null && v !== undefined) out.push([reports[i][0], v / dt]);
  }
  return out;
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
  const mounts = new Set(info.flatMap(([, v]) => (v.df || []).map(f => f.mount)).filter(m => !pseudo(m)));
  const disk = [...mounts].map(m => ({
    name: m, points: info.map(([t, v]) => [t, (v.df || []).find(f => f.mount === m)]).filter(p => p[1] && p[1].size_kb)
      .map(([t, f]) => [t, 100 * f.used_kb / f.size_kb]),
  }));
  const ifaces = new Set(usage.flatMap(([, v]) => Object.keys(v.interfaces || {})));
  const net = [...ifaces].map(i => ({
    name: i, points: rates(usage, v => { const c = (v.interfaces || {})[i]; return c ? c.rx + c.tx : null; }),
  }));
  const apps = new Set(usage.flatMap(([, v]) => Object.keys(v.apps || {})));
  const perApp = [...apps].map(a => ({
    name: a === "unnamed" ? "apps without X-GWE-App" : a,
    points: rates(usage, v => ((v.apps || {})[a] || { tot_tx: 0 }).tot_tx),
  }));
  const queue = [{ name: "backlog", points: engine.filter(p => p[1].queue).map(([t, v]) => [t, v.queue.backlog]) }];
  return [
    chart("Memory", "bytes", mem),
    chart("Disk used", "pct", disk),
    chart("Bandwidth per interface", "rate", net),
    chart("Data sent per app", "rate", perApp),
    chart("Queue depth", "records", queue),
  ];
}

// ---------------------------------------------------------------- gateway page

async function devicePage(id) {
  let d = await api("GET", "/ui/api/devices/" + id);
  const msg = el("p", { class: "notice", id: "command-msg", role: "status" });
  const fresh = el("span", { id: "device-fresh", class: "muted" });
  const title = el("h1", {});
  const meta = el("p", { class: "muted", id: "device-meta" });
  const faults = el("div", { id: "device-faults" });
  const tagsBox = el("p", { class: "inline", id: "device-tags" });
  const inventory = el("dl", { id: "inventory" });
  const appsBody = el("tbody", {});
  const controlBox = el("dl", {});
  const fetchList = el("ol", { id: "fetch-status" });
  const charts = el("section", { class: "charts", id: "charts", "aria-label": "Telemetry" });
  const versionOf = p => p.replace(/^.*\.v/, "").replace(/\.tar\.gz$/, "");
  const nameOf = p => p.replace(/\.v[^/]*\.tar\.gz$/, "");
  const cmp = (a, b) => a.localeCompare(b, undefined, { numeric: true });
  const alive = () => title.isConnected;

  async function send(cmd, form) {
    try {
      const r = await api("POST", "/ui/api/devices/" + id + "/command", cmd);
      if (form) formError(form, msg, null);
      notice(msg, "Sent: " + r.sent + ". Waiting for the gateway…", true);
      watch();
    } catch (e) {
      if (form) formError(form, msg, e); else notice(msg, e.message, false);
    }
  }

  const pick = el("select", { name: "package" });
  const installForm = el("form", { id: "install-form", class: "inline needs-operator" },
    field("install", "Package", pick), el("button", { type: "submit", id: "install" }, "Install"));
  installForm.addEventListener("submit", ev => {
    ev.preventDefault();
    if (!pick.value) formError(installForm, msg, new ApiError("Choose a package.", "package"));
    else send({ kind: "install", package: pick.value }, installForm);
  });
  const cmdText = el("textarea", { name: "command", rows: 5, spellcheck: "false" },
    JSON.stringify({ id: "ui-" + Date.now().toString(36), config: {} }, null, 1));
  const cmdForm = el("form", { id: "command-form", class: "needs-operator" }, field("edge", "Edge command (JSON)", cmdText),
    el("p", {}, el("button", { type: "submit", id: "send-command" }, "Send edge command")));
  cmdText.id = "edge-command";
  cmdForm.addEventListener("submit", ev => {
    ev.preventDefault();
    const c = parse(cmdText.value);
    if (!c || typeof c !== "object" || Array.isArray(c)) {
      formError(cmdForm, msg, new ApiError("The command is not a JSON object.", "command"));
      return;
    }
    send({ kind: "edge", command: c }, cmdForm);
  });
  const tagInput = el("input", { name: "tags", maxlength: "32", placeholder: "e.g. north" });
  const tagForm = el("form", { id: "tag-form", class: "inline needs-operator" }, field("tag", "Add a tag", tagInput),
    el("button", { type: "submit" }, "Add"));
  async function tag(action) {
    try {
      await api("POST", "/ui/api/bulk", { ids: [+id], action });
      formError(tagForm, msg, null);
      tagInput.value = "";
      await reload();
    } catch (e) { formError(tagForm, msg, e); }
  }
  tagForm.addEventListener("submit", ev => {
    ev.preventDefault();
    if (!TAG.test(tagInput.value.trim())) {
      formError(tagForm, msg, new ApiError("A tag is 1 to 32 letters, digits, '.', '_' or '-'.", "tags"));
      return;
    }
    tag({ kind: "tag", add: [tagInput.value.trim()] });
  });

  function render() {
    const dev = d.device, now = d.now_ms;
    const report = parse((d.latest.engine_report || {}).value || "") || {};
    const info = parse((d.latest.device_info || {}).value || "") || {};
    const apps = (report.apps || []).flatMap(o => Object.entries(o));
    const pkgs = d.packages.filter(p => /\.v[^/]+\.tar\.gz$/.test(p)).sort(cmp);
    title.replaceChildren(dev.sn, " ", el("b", { class: d.online ? "on" : "off", id: "device-online" }, d.online ? "online" : "offline"));
    meta.textContent = dev.vendor + "/" + dev.model + " · device " + dev.id + " · " + dev.status +
      " · token " + (dev.token_hint ? dev.token_hint + "…" : "none") + " · last seen " + ago(dev.last_seen_ms, now) +
      " · agent " + (report.engine_version || "unknown");
    const f = report.faults || [];
    faults.replaceChildren(...kids(f.length ? el("p", { class: "notice error" }, "Data partition faults: " + f.map(x => x.part + ": " + x.error).join("; ")) : null));
    tagsBox.replaceChildren("Tags: ", ...(d.tags.length ? d.tags.map(t => el("span", { class: "tag" }, t, " ",
      el("button", { type: "button", class: "link needs-operator", "aria-label": "Remove the tag " + t, onclick: () => tag({ kind: "tag", remove: [t] }) }, "×")))
      : [el("span", { class: "muted" }, "none")]));
    const u = info.uname || {};
    const addrs = Object.entries(info.ipaddrs || {}).filter(([k]) => k !== "lo").map(([k, v]) => k + " " + v.join(", "));
    inventory.replaceChildren(
      el("dt", {}, "OS"), el("dd", {}, info.os || u.sysname || "unknown"),
      el("dt", {}, "Kernel"), el("dd", {}, u.release || "unknown"),
      el("dt", {}, "Architecture"), el("dd", {}, u.machine || "unknown"),
      el("dt", {}, "Addresses"), el("dd", {}, addrs.join("; ") || "none reported"));
    appsBody.replaceChildren(...(apps.length ? apps.map(([name, a]) => {
      const older = pkgs.filter(p => nameOf(p) === name && a.version && cmp(versionOf(p), a.version) < 0).pop();
      return el("tr", { "data-app": name },
        el("td", {}, name), el("td", {}, a.version || "–"),
        el("td", {}, el("b", { class: "state " + String(a.status).toLowerCase() }, a.status)),
        el("td", {}, a.uptime === undefined ? "" : String(a.uptime)),
        el("td", {},
          older ? el("button", { type: "button", class: "rollback needs-operator", onclick: () => send({ kind: "install", package: older }) }, "Roll back to " + versionOf(older)) : null,
          el("button", { type: "button", class: "remove needs-operator", onclick: async () => {
            if (await confirmDialog("Remove " + name + " from " + dev.sn + "?", "Remove")) send({ kind: "remove", app: name });
          } }, "Remove")));
    }) : [el("tr", {}, el("td", { colspan: "5", class: "muted" }, "No apps reported yet."))]));
    const keep = pick.value;
    pick.replaceChildren(el("option", { value: "" }, pkgs.length ? "Choose a package…" : "The hub hosts no package for this model"),
      ...pkgs.map(p => el("option", { value: p }, p)));
    if (pkgs.includes(keep)) pick.value = keep;
    const control = d.control || {};
    controlBox.replaceChildren(
      el("dt", {}, "State"), el("dd", { id: "control-state" }, control.state || "–"),
      el("dt", {}, "Last command"), el("dd", { id: "control-last" }, control.last_command || "–"),
      el("dt", {}, "Pending"), el("dd", { id: "control-pending" }, control.pending || "–"));
    fetchList.replaceChildren(...(d.fetch_status.length ? d.fetch_status.map(([t, v]) =>
      el("li", {}, el("time", {}, when(t * 1000)), " ", v.split("\n")[0])) : [el("li", { class: "muted" }, "Nothing fetched yet.")]));
    charts.replaceChildren(...telemetry(d.series));
  }

  main.replaceChildren(title, meta, el("p", {}, fresh, " ", el("button", { type: "button", id: "reenable", class: "needs-admin", onclick: async () => {
    if (!await confirmDialog("Let " + d.device.sn + " activate again? Its current token stops working.", "Re-enable")) return;
    try { await api("POST", "/ui/api/devices/" + id + "/enable"); notice(msg, "Re-enabled: the gateway may activate again.", true); }
    catch (e) { notice(msg, e.message, false); }
  } }, "Re-enable")), msg, faults,
  el("section", { class: "grid" },
    el("div", { class: "card" }, el("h2", {}, "Apps"),
      el("table", { id: "apps" }, el("thead", {}, el("tr", {}, ["App", "Version", "State", "Uptime", "Actions"].map(h => el("th", { scope: "col" }, h)))), appsBody),
      installForm),
    el("div", { class: "card" }, el("h2", {}, "Control"), controlBox, cmdForm),
    el("div", { class: "card" }, el("h2", {}, "Inventory"), inventory, tagsBox, tagForm),
    el("div", { class: "card" }, el("h2", {}, "Recent fetch_status"), fetchList)),
  el("h2", {}, "Telemetry"), charts);
  render();

  const mark = freshness(fresh);
  async function reload() {
    try {
      d = await api("GET", "/ui/api/devices/" + id);
      render();
      mark(true);
      return true;
    } catch (e) { mark(false); return false; }
  }
  every(REFRESH_MS, alive, reload);

  // After a command: look every 2 s until the gateway's answer changed it (or 2 minutes passed).
  let watching = null;
  function watch() {
    if (watching) clearInterval(watching);
    const seen = x => JSON.stringify([x.control, x.fetch_status[0], x.latest.engine_report]);
    const before = seen(d);
    let n = 0;
    watching = setInterval(async () => {
      n++;
      if (!alive()) { clearInterval(watching); return; }
      if (await reload() && (seen(d) !== before || n > 60)) {
        clearInterval(watching);
        msg.textContent = msg.textContent.replace("Waiting for the gateway…", "The gateway answered.");
      }
    }, 2000);
  }
}

// ---------------------------------------------------------------- rollouts

const STATES = ["installed", "failed", "sent", "pending", "skipped"];

function counts(c) {
  return STATES.filter(k => c[k]).map(k => c[k] + " " + k).join(", ") || "no gateways";
}

/** A stage's progress bar: answered (installed or failed) of its gateways. */
function stageBar(i, pct, c) {
  const total = STATES.reduce((a, k) => a + (c[k] || 0), 0);
  const answered = (c.installed || 0) + (c.failed || 0);
  const label = "Stage " + (i + 1) + " (" + pct + " %)";
  return el("div", { class: "stage", "data-stage": i + 1 },
    el("span", { class: "stage-label", id: "stage-label-" + i }, label),
    el("progress", { max: total || 1, value: answered, "aria-labelledby": "stage-label-" + i }),
    el("span", { class: "muted" }, answered + " of " + total + (c.failed ? ", " + c.failed + " failed" : "")));
}

async function rolloutsPage() {
  const [list, pkgs, filters] = await Promise.all([api("GET", "/ui/api/rollouts"), api("GET", "/ui/api/packages"), api("GET", "/ui/api/filters")]);
  const msg = el("p", { class: "notice", id: "rollout-msg", role: "status" });
  const preview = el("div", { id: "rollout-preview", class: "card", "aria-live": "polite" }, el("p", { class: "muted" }, "Choose a package to see the group."));
  const pkg = el("select", { name: "package", required: true },
    el("option", { value: "" }, pkgs.length ? "Choose a package…" : "The hub hosts no packages: upload one first"),
    pkgs.map((p, i) => el("option", { value: String(i) }, (p.kind === "os" ? "OS bundle " : "") + p.name + " " + p.version + " — " + p.vendor + "/" + p.model)));
  const savedSel = el("select", { name: "saved_filter" }, el("option", { value: "" }, "Every gateway of the package's model"),
    filters.map(f => el("option", { value: f.name }, "Saved filter " + f.name + ": " + f.query)));
  const startAt = el("input", { name: "start_at", type: "datetime-local" });
  // An OS bundle reboots the gateway into its new system: at once, in a UTC window, or at
  // the gateway's next restart. Shown only when the package is an OS bundle.
  const reboot = el("input", { name: "reboot", value: "now", maxlength: "11", placeholder: "now, manual or 02:00-04:00" });
  const rebootField = field("rollout", "Reboot into the new system (now, manual, or a window HH:MM-HH:MM UTC)", reboot);
  // Streamed: RAUC reads the bundle from the hub as it installs, only the blocks the
  // gateway's slots lack (an adaptive bundle), instead of a download of all of it first.
  const stream = el("input", { name: "stream", type: "checkbox" });
  const streamField = field("rollout", "Stream it (fetch only the blocks the gateway lacks)", stream);
  const isOs = () => { const i = pkg.value; return i !== "" && pkgs[+i].kind === "os"; };
  const showReboot = () => { rebootField.hidden = !isOs(); streamField.hidden = !isOs(); };
  pkg.addEventListener("change", showReboot);
  showReboot();
  const form = el("form", { class: "card needs-operator", id: "new-rollout" },
    el("h2", {}, "New rollout"),
    el("div", { class: "fields" },
      field("rollout", "Name", el("input", { name: "name", required: true, maxlength: "100", placeholder: "e.g. sensor 2.9 to the north" })),
      field("rollout", "Package", pkg),
      field("rollout", "Group", savedSel),
      field("rollout", "Narrowed by the filter (optional)", el("input", { name: "query", maxlength: "200", placeholder: "e.g. tag:north online" })),
      field("rollout", "Stages (% of the group, rising, ending at 100)", el("input", { name: "stages", value: "1, 10, 100", required: true })),
      field("rollout", "Pause when a stage's failures pass (%)", el("input", { name: "max_failure_pct", value: "10", type: "number", min: "0", max: "100", required: true })),
      field("rollout", "Start at (empty: at once)", startAt),
      rebootField, streamField),
    el("p", {}, el("button", { type: "submit", id: "start-rollout", class: "primary" }, "Start")),
    msg);
  form.noValidate = true;

  function body() {
    const f = new FormData(form);
    const p = f.get("package") === "" ? undefined : pkgs[+f.get("package")];
    const stages = String(f.get("stages")).split(",").map(x => x.trim()).filter(Boolean).map(Number);
    const b = {
      name: String(f.get("name")), package: p ? p.id : "", vendor: p ? p.vendor : "", model: p ? p.model : "",
      query: String(f.get("query")), saved_filter: String(f.get("saved_filter")),
      stages: stages.every(Number.isInteger) ? stages : [], max_failure_pct: parseInt(f.get("max_failure_pct"), 10),
    };
    if (f.get("start_at")) b.start_at_ms = new Date(String(f.get("start_at"))).getTime();
    if (p && p.kind === "os") b.reboot = String(f.get("reboot")).trim();
    if (p && p.kind === "os" && f.get("stream")) b.stream = true;
    if (Number.isNaN(b.max_failure_pct)) b.max_failure_pct = -1;
    return b;
  }
  /** The hub's own checks, made here first so that a typo costs no request. */
  function check(b, start) {
    if (!b.package) return new ApiError("Choose a package.", "package");
    if (start && (!b.name.trim() || b.name.length > 100)) return new ApiError("A rollout's name is 1 to 100 characters.", "name");
    const s = b.stages;
    if (!s.length || s.length > 10 || s[0] < 1 || s[s.length - 1] !== 100 || s.some((x, i) => i && x <= s[i - 1])) {
      return new ApiError("Stages: rising percentages of the group, the last one 100, such as 1, 10, 100.", "stages");
    }
    if (!(b.max_failure_pct >= 0 && b.max_failure_pct <= 100)) return new ApiError("The failure limit is 0 to 100 %.", "max_failure_pct");
    if (b.reboot !== undefined && !/^(now|manual|([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d)$/.test(b.reboot)) {
      return new ApiError("Reboot: now, manual, or a window HH:MM-HH:MM (UTC), such as 02:00-04:00.", "reboot");
    }
    const bad = b.query.split(/\s+/).find(t => t.startsWith("tag:") && !TAG.test(t.slice(4)));
    if (bad) return new ApiError(bad + ": a tag is 1 to 32 letters, digits, '.', '_' or '-'.", "query");
    if (start && b.start_at_ms !== undefined && !(b.start_at_ms > Date.now() - 60000 && b.start_at_ms < Date.now() + 366 * 86400000)) {
      return new ApiError("The start must be from now to a year away.", "start_at");
    }
    return null;
  }
  let previewTimer = null, previewN = 0;
  async function showPreview() {
    const n = ++previewN;
    const b = body();
    const wrong = check(b, false);
    if (wrong) {
      preview.replaceChildren(el("p", { class: "muted" }, "No group yet: " + wrong.message));
      return;
    }
    try {
      const p = await api("POST", "/ui/api/rollouts/preview", b);
      if (n !== previewN) return;
      formError(form, msg, null);
      preview.replaceChildren(el("h3", {}, "The group: " + p.gateways + " gateway" + (p.gateways === 1 ? "" : "s")),
        el("p", { class: "muted" }, p.filter),
        el("ol", { id: "preview-stages" }, p.stages.map((s, i) => el("li", {}, "Stage " + (i + 1) + " (" + s.pct + " %): " + s.count + " gateway" + (s.count === 1 ? "" : "s"),
          s.members.length ? el("span", { class: "muted" }, " — " + s.members.join(", ") + (s.count > s.members.length ? ", …" : "")) : null))));
      document.getElementById("start-rollout").textContent = "Start the rollout to " + p.gateways + " gateway" + (p.gateways === 1 ? "" : "s");
    } catch (e) {
      if (n !== previewN) return;
      preview.replaceChildren(el("p", { class: "muted" }, "No group yet: " + e.message));
      document.getElementById("start-rollout").textContent = "Start";
    }
  }
  const later = () => { clearTimeout(previewTimer); previewTimer = setTimeout(showPreview, 250); };
  form.addEventListener("input", later);
  form.addEventListener("change", later);
  form.addEventListener("submit", async ev => {
    ev.preventDefault();
    const b = body();
    const wrong = check(b, true);
    if (wrong) { formError(form, msg, wrong); return; }
    try {
      const r = await api("POST", "/ui/api/rollouts", b);
      location.href = "/ui/rollouts/" + r.id;
    } catch (e) {
      formError(form, msg, Object.assign(e, { field: e.field === "start_at" ? "start_at" : e.field }));
    }
  });
  main.replaceChildren(
    el("h1", {}, "Rollouts"),
    list.length ? el("table", { id: "rollouts" },
      el("thead", {}, el("tr", {}, ["Name", "Package", "Group", "Starts", "Stage", "Progress", "State"].map(h => el("th", { scope: "col" }, h)))),
      el("tbody", {}, list.map(r => el("tr", { "data-id": r.id },
        el("td", {}, el("a", { href: "/ui/rollouts/" + r.id }, r.name)), el("td", {}, r.package), el("td", {}, r.filter),
        el("td", {}, when(r.start_ms)),
        el("td", {}, (r.stage + 1) + " of " + r.stages.length + " (" + r.stages.join(" / ") + " %)"),
        el("td", {}, el("progress", { max: r.gateways || 1, value: (r.counts.installed || 0) + (r.counts.failed || 0), "aria-label": "Progress of " + r.name }), " ", counts(r.counts)),
        el("td", {}, el("b", { class: "state " + r.state }, r.state))))))
      : el("p", { class: "empty muted", id: "rollouts-empty" }, "No rollouts yet: start one below."),
    form, preview);
}

async function rolloutPage(id) {
  const msg = el("p", { class: "notice", id: "rollout-msg", role: "status" });
  const box = el("div", { id: "rollout" });
  const fresh = el("span", { class: "muted", id: "rollout-fresh" });
  main.replaceChildren(box, el("p", {}, fresh), msg);
  const mark = freshness(fresh);
  const act = a => async () => {
    if (a === "abort" && !await confirmDialog("Abort this rollout? Gateways not yet sent the package are skipped.", "Abort")) return;
    try { await api("POST", "/ui/api/rollouts/" + id + "/" + a); await load(); }
    catch (e) { notice(msg, e.message, false); }
  };
  let state = null;
  async function load() {
    let r;
    try { r = await api("GET", "/ui/api/rollouts/" + id); mark(true); } catch (e) { mark(false); return; }
    const focus = document.activeElement && document.activeElement.id;
    state = r.state;
    box.replaceChildren(
      el("h1", {}, r.name, " ", el("b", { class: "state " + r.state, id: "rollout-state" }, r.state)),
      el("p", { class: "muted" }, r.package + " to " + r.filter + " · stages " + r.stages.join(" / ") +
        " % · pauses above " + r.max_failure_pct + " % failed · " + (r.state === "scheduled" ? "starts " : "started ") + when(r.start_ms) +
        (/\.raucb$/.test(r.package) ? " · reboots " + (r.reboot === "now" ? "at once" : r.reboot === "manual" ? "at the next restart" : "in " + r.reboot + " UTC") +
          (r.stream ? " · streamed" : "") : "") +
        " · stage " + (r.stage + 1) + " of " + r.stages.length),
      el("p", { id: "rollout-reason", class: r.state === "paused" ? "notice error" : "muted" }, r.reason || "\u00a0"),
      el("p", { id: "rollout-counts" }, counts(r.counts)),
      el("div", { class: "stages", id: "rollout-stages" }, r.stages.map((p, i) => stageBar(i, p, r.stage_counts[i] || {}))),
      el("p", {},
        r.state === "running" ? el("button", { type: "button", id: "pause", class: "needs-operator", onclick: act("pause") }, "Pause") : null, " ",
        r.state === "paused" ? el("button", { type: "button", id: "resume", class: "needs-operator", onclick: act("resume") }, "Resume") : null, " ",
        ["running", "paused", "scheduled"].includes(r.state) ? el("button", { type: "button", id: "abort", class: "needs-operator", onclick: act("abort") }, "Abort") : null),
      el("table", { id: "rollout-devices" },
        el("thead", {}, el("tr", {}, ["Gateway", "Stage", "State", "Detail", "Updated"].map(h => el("th", { scope: "col" }, h)))),
        el("tbody", {}, r.devices.map(d => el("tr", { "data-sn": d.sn },
          el("td", {}, el("a", { href: "/ui/devices/" + d.device_id }, d.sn)), el("td", {}, d.stage + 1),
          el("td", {}, el("b", { class: "state " + d.state }, d.state)), el("td", {}, d.detail),
          el("td", {}, el("time", { title: when(d.updated_ms) }, ago(d.updated_ms, Date.now()))))))));
    if (focus && document.getElementById(focus)) document.getElementById(focus).focus();
  }
  await load();
  // A rollout under way moves by itself: look again every 2 s, else every REFRESH_MS.
  const alive = () => box.isConnected;
  every(2000, alive, async () => { if (state === "running" || state === "scheduled") await load(); });
  every(REFRESH_MS, alive, async () => { if (state !== "running" && state !== "scheduled") await load(); });
}

// ---------------------------------------------------------------- audit log

/** Who changed what, newest first, 200 entries a page; CSV export of up to 100,000. */
async function auditPage() {
  const PAGE = 200;
  const body = el("tbody", {});
  const more = el("button", { type: "button", id: "audit-more" }, "Older entries");
  const row = e => el("tr", { "data-id": e.id },
    el("td", {}, el("time", { title: when(e.at_ms) }, when(e.at_ms))), el("td", {}, e.actor),
    el("td", {}, el("b", { class: "action" }, e.action)), el("td", { class: "targets" }, e.targets),
    el("td", {}, e.detail), el("td", {}, e.addr));
  let last = null;
  async function load() {
    const q = last === null ? "" : "&before=" + last;
    const list = await api("GET", "/ui/api/audit?limit=" + PAGE + q);
    body.append(...list.map(row));
    if (list.length) last = list[list.length - 1].id;
    more.hidden = list.length < PAGE;
    empty.hidden = body.children.length > 0;
  }
  more.addEventListener("click", load);
  const empty = el("p", { class: "empty muted", id: "audit-empty" }, "Nothing has been changed yet.");
  main.replaceChildren(
    el("h1", {}, "Audit log"),
    el("p", { class: "muted" }, "Every change, sign-in and failed sign-in, newest first. Nobody can edit it. ",
      el("a", { href: "/ui/api/audit?format=csv&limit=100000", id: "audit-csv", download: "gwe-audit.csv" }, "Export as CSV")),
    el("table", { id: "audit" },
      el("thead", {}, el("tr", {}, ["When", "Who", "What", "To", "Detail", "From"].map(h => el("th", { scope: "col" }, h)))),
      body),
    empty, el("p", {}, more));
  await load();
}

// ---------------------------------------------------------------- routing

(async () => {
  const p = location.pathname;
  for (const a of document.querySelectorAll("header nav a")) {
    if (p.startsWith(a.getAttribute("href"))) a.setAttribute("aria-current", "page");
  }
  try {
    let m;
    if ((m = p.match(/^\/ui\/devices\/(\d+)$/))) await devicePage(m[1]);
    else if ((m = p.match(/^\/ui\/rollouts\/(\d+)$/))) await rolloutPage(m[1]);
    else if (p === "/ui/rollouts") await rolloutsPage();
    else if (p === "/ui/audit") await auditPage();
    else await fleetPage();
  } catch (e) {
    main.replaceChildren(el("p", { class: "notice error" }, e.message));
  }
})();

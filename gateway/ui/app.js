// Tern's dashboard: a page per hash route, data from the admin API (the
// same token as the CLI, kept in this browser session only), charts drawn
// as SVG. No build step and nothing fetched from elsewhere.
"use strict";

const TOKEN_KEY = "tern-token";
const main = document.getElementById("main");
let timer = null;       // the current page's refresh
let tail = null;        // the current page's log stream
let loginError = "";

class Refused extends Error {}

async function api(path, options = {}) {
  const token = sessionStorage.getItem(TOKEN_KEY) || "";
  const r = await fetch("/api/v1" + path, {
    ...options,
    headers: { ...(options.headers || {}), Authorization: "Bearer " + token },
  });
  if (r.status === 401) {
    sessionStorage.removeItem(TOKEN_KEY);
    loginError = "That token was refused.";
    throw new Refused();
  }
  if (!r.ok) {
    const body = await r.json().catch(() => ({}));
    throw new Error(body.message || body.error || r.status + " " + r.statusText);
  }
  return r.json();
}

const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const fmt = (n, digits = 1) => (n === undefined || n === null ? "–" : Number(n).toFixed(digits));
const ago = (ms) => {
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 90) return Math.round(s) + " s ago";
  if (s < 5400) return Math.round(s / 60) + " min ago";
  if (s < 129600) return Math.round(s / 3600) + " h ago";
  return Math.round(s / 86400) + " d ago";
};

function stop() {
  if (timer) clearInterval(timer);
  timer = null;
  if (tail) tail.abort();
  tail = null;
}

function every(ms, f) {
  f();
  timer = setInterval(f, ms);
}

// ---- login ----------------------------------------------------------

function showLogin() {
  stop();
  document.getElementById("logout").hidden = true;
  main.innerHTML = `
    <form class="login" id="login-form">
      <h1>Tern</h1>
      <label for="token">Admin token</label>
      <input id="token" type="password" autocomplete="off" placeholder="the admin-token file in the data dir">
      <button id="login" type="submit">Log in</button>
      <p id="login-error" class="bad">${esc(loginError)}</p>
    </form>`;
  document.getElementById("login-form").onsubmit = async (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, document.getElementById("token").value.trim());
    loginError = "";
    route();
  };
}

document.getElementById("logout").onclick = () => {
  sessionStorage.removeItem(TOKEN_KEY);
  showLogin();
};

// ---- charts ---------------------------------------------------------

// series: [{ name, color, points: [[t_ms, value], ...] }]
function chart(id, title, unit, series) {
  const W = 520, H = 140, L = 44, B = 18;
  const all = series.flatMap((s) => s.points);
  const max = Math.max(1e-9, ...all.map((p) => p[1]));
  // The last hour, or less while there is less: at least 5 minutes.
  const t1 = Date.now();
  const first = Math.min(...all.map((p) => p[0]), t1);
  const t0 = Math.max(t1 - 3600 * 1000, Math.min(first, t1 - 300 * 1000));
  const span = Math.round((t1 - t0) / 60000);
  const x = (t) => L + ((t - t0) / (t1 - t0)) * (W - L - 4);
  const y = (v) => H - B - (v / max) * (H - B - 8);
  const lines = series.map((s) => {
    const pts = s.points.map((p) => `${x(p[0]).toFixed(1)},${y(p[1]).toFixed(1)}`).join(" ");
    return `<polyline fill="none" stroke="${s.color}" stroke-width="1.5" points="${pts}"/>`;
  }).join("");
  const last = series[0]?.points.at(-1)?.[1] ?? 0;
  return `<div class="chart"><h3>${esc(title)}</h3>
    <svg id="${id}" viewBox="0 0 ${W} ${H}" preserveAspectRatio="none" data-max="${max}" data-last="${last}" data-points="${all.length}">
      <line x1="${L}" y1="${H - B}" x2="${W}" y2="${H - B}" stroke="#ccc"/>
      <text x="2" y="14" font-size="11" fill="#6b7385">${fmt(max, max < 10 ? 2 : 0)} ${esc(unit)}</text>
      <text x="2" y="${H - B}" font-size="11" fill="#6b7385">0</text>
      <text x="${L}" y="${H - 2}" font-size="11" fill="#6b7385">−${span} min</text>
      <text x="${W - 30}" y="${H - 2}" font-size="11" fill="#6b7385">now</text>
      ${lines}
    </svg>
    <div class="legend">${series.map((s) => `<span style="color:${s.color}">■ ${esc(s.name)}</span>`).join("")}</div></div>`;
}

// ---- functions ------------------------------------------------------

async function functionsPage() {
  main.innerHTML = `<h1>Functions</h1><table id="functions"><thead><tr>
    <th>Function</th><th>Version</th><th>Routes / triggers</th><th>Replicas</th><th>Req/s</th>
    <th>Errors</th><th>p50</th><th>p99</th><th>Cold starts</th><th>Deployed</th></tr></thead><tbody></tbody></table>`;
  every(3000, async () => {
    try {
      const [list, history] = await Promise.all([api("/functions"), api("/history")]);
      const details = await Promise.all(list.slice(0, 200).map((f) => api("/functions/" + encodeURIComponent(f.name)).catch(() => null)));
      const rows = list.map((f, i) => {
        const d = details[i];
        const h = history[f.name] || {};
        const spec = d?.active?.spec || {};
        const triggers = [...(f.routes || []), ...(spec.on_event || []).map((s) => "event " + s), ...(spec.schedule ? ["cron " + spec.schedule] : [])];
        return `<tr data-function="${esc(f.name)}">
          <td><a href="#/f/${encodeURIComponent(f.name)}">${esc(f.name)}</a></td>
          <td class="num">v${f.active_version}</td>
          <td>${triggers.map(esc).join("<br>") || '<span class="muted">none</span>'}</td>
          <td class="num replicas">${d ? d.replicas : "–"} / ${h.wanted ?? "–"}</td>
          <td class="num rps">${fmt(h.rps)}</td>
          <td class="num errors ${h.error_pct > 0 ? "bad" : ""}">${fmt(h.error_pct)} %</td>
          <td class="num">${fmt(h.p50_ms, 2)} ms</td>
          <td class="num">${fmt(h.p99_ms, 2)} ms</td>
          <td class="num">${d?.scale?.cold_starts ?? "–"}</td>
          <td>${d ? ago(d.active.created_at_ms) : "–"}</td></tr>`;
      });
      document.querySelector("#functions tbody").innerHTML = rows.join("") || `<tr><td colspan="10" class="muted">No functions yet: tern deploy FILE --name NAME --route /path</td></tr>`;
    } catch (e) { failed(e); }
  });
}

// ---- one function ---------------------------------------------------

async function functionPage(name) {
  const path = "/functions/" + encodeURIComponent(name);
  main.innerHTML = `<h1>${esc(name)} <span class="muted">active version <span id="active-version">…</span></span></h1>
    <div class="charts" id="charts"></div>
    <h2>Versions</h2><table id="versions"><tbody></tbody></table>
    <h2>Recent invocations</h2><table id="invocations"><thead><tr><th>ID</th><th>Start</th><th>Trigger</th><th>Status</th>
      <th>Duration</th><th>Guest</th><th>Memory</th><th>In / out</th><th></th></tr></thead><tbody></tbody></table>
    <h2>Dead letters</h2><table id="dead-letters"><tbody></tbody></table>
    <h2>Log</h2><pre id="logs"></pre>`;
  followLogs(path);
  every(5000, async () => {
    try {
      const [d, h, inv, dl] = await Promise.all([
        api(path), api(path + "/history"), api(path + "/invocations?limit=20"), api(path + "/dead-letters").catch(() => []),
      ]);
      const s = h.samples;
      const pts = (f) => s.map((x) => [x.t_ms, f(x)]);
      document.getElementById("charts").innerHTML =
        chart("chart-rate", "Requests", "/s", [{ name: "req/s", color: "#2f6fed", points: pts((x) => x.rps) }]) +
        chart("chart-errors", "Errors", "/s", [{ name: "5xx/s", color: "#d3343a", points: pts((x) => x.errors) }]) +
        chart("chart-latency", "Latency", "ms", [
          { name: "p50", color: "#1f9d55", points: pts((x) => x.p50_ms) },
          { name: "p99", color: "#e08a00", points: pts((x) => x.p99_ms) }]) +
        chart("chart-replicas", "Replicas and concurrency", "", [
          { name: "ready", color: "#2f6fed", points: pts((x) => x.ready) },
          { name: "wanted", color: "#9aa5b8", points: pts((x) => x.wanted) },
          { name: "in flight", color: "#e08a00", points: pts((x) => x.inflight) }]);
      document.getElementById("active-version").textContent = d.active_version;
      document.querySelector("#versions tbody").innerHTML = `<tr><th>Version</th><th>Digest</th><th>Deployed</th><th></th></tr>` +
        [...d.versions].reverse().map((v) => `<tr><td>v${v.number}</td><td class="muted">${esc(v.digest.slice(0, 12))}</td>
          <td>${ago(v.created_at_ms)}</td><td>${v.number === d.active_version ? '<span class="ok">active</span>'
          : `<button class="rollback" data-version="${v.number}">Roll back to v${v.number}</button>`}</td></tr>`).join("");
      document.querySelectorAll("button.rollback").forEach((b) => b.onclick = async () => {
        b.disabled = true;
        await api(path + "/rollback?to=" + b.dataset.version, { method: "POST" }).catch(failed);
        refreshNow();
      });
      document.querySelector("#invocations tbody").innerHTML = inv.map((r) => `<tr class="${r.status >= 500 ? "bad" : ""}">
        <td>${esc(r.id)}</td><td>${new Date(r.start_ms).toLocaleTimeString()}</td><td>${esc(r.trigger)}${r.attempt ? " #" + r.attempt : ""}</td>
        <td>${r.status}</td><td class="num">${fmt(r.duration_us / 1000, 2)} ms</td><td class="num">${fmt(r.guest_us / 1000, 2)} ms</td>
        <td class="num">${Math.round(r.peak_memory_bytes / 1024)} KiB</td><td class="num">${r.bytes_in} / ${r.bytes_out}</td>
        <td>${r.cold ? "cold" : ""} ${esc(r.error || "")}</td></tr>`).join("");
      document.querySelector("#dead-letters tbody").innerHTML = dl.length === 0 ? `<tr><td class="muted">none</td></tr>` :
        `<tr><th>Event</th><th>Subject</th><th>Attempts</th><th>Error</th><th></th></tr>` +
        dl.map((l) => `<tr data-event="${esc(l.id)}"><td>${esc(l.id)}</td><td>${esc(l.subject)}</td><td>${l.attempts}</td>
          <td class="bad">${esc(l.error)}</td><td><button class="replay" data-id="${esc(l.id)}">Replay</button></td></tr>`).join("");
      document.querySelectorAll("button.replay").forEach((b) => b.onclick = async () => {
        b.disabled = true;
        await api(path + "/dead-letters/replay?id=" + encodeURIComponent(b.dataset.id), { method: "POST" }).catch(failed);
        refreshNow();
      });
    } catch (e) { failed(e); }
  });
}

function refreshNow() {
  // The page's refresh, at once rather than at its next tick.
  route();
}

async function followLogs(path) {
  tail = new AbortController();
  const pre = document.getElementById("logs");
  try {
    const r = await fetch("/api/v1" + path + "/logs?tail=100&follow=true", {
      headers: { Authorization: "Bearer " + (sessionStorage.getItem(TOKEN_KEY) || "") },
      signal: tail.signal,
    });
    const reader = r.body.getReader();
    const text = new TextDecoder();
    let pending = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      pending += text.decode(value, { stream: true });
      const lines = pending.split("\n");
      pending = lines.pop();
      for (const l of lines) {
        try {
          const rec = JSON.parse(l);
          pre.textContent += `${new Date(rec.ts_ms).toLocaleTimeString()} ${rec.invocation || ""} ${rec.stream}: ${rec.line}\n`;
        } catch (_) { /* a partial line */ }
      }
      pre.scrollTop = pre.scrollHeight;
    }
  } catch (_) { /* the page was left */ }
}

// ---- nodes and events -----------------------------------------------

async function nodesPage() {
  main.innerHTML = `<h1>Nodes</h1><table id="nodes"><thead><tr><th>Node</th><th>State</th><th>Memory (MiB)</th>
    <th>Instances</th><th>Served</th><th>Functions</th><th>Labels</th></tr></thead><tbody></tbody></table>`;
  every(3000, async () => {
    try {
      const s = await api("/status");
      document.querySelector("#nodes tbody").innerHTML = s.nodes.map((n) => {
        const loads = Object.values(n.load || {});
        const sum = (k) => loads.reduce((a, l) => a + (l[k] || 0), 0);
        return `<tr data-node="${esc(n.node_id)}"><td>${esc(n.node_id)}</td>
          <td class="${n.alive ? "ok" : "bad"}">${n.alive ? "alive" : "dead"}</td>
          <td class="num">${n.used_memory_mib} / ${n.capacity.memory_mib}</td><td class="num">${sum("in_flight")}</td>
          <td class="num">${sum("completed")}</td><td>${Object.keys(n.loaded).map(esc).join(", ")}</td>
          <td>${Object.entries(n.labels || {}).map(([k, v]) => esc(k + "=" + v)).join(", ")}</td></tr>`;
      }).join("");
    } catch (e) { failed(e); }
  });
}

async function eventsPage() {
  main.innerHTML = `<h1>Event triggers</h1><table id="triggers"><thead><tr><th>Function</th><th>Subject</th>
    <th>Backlog</th><th>Dead letters</th></tr></thead><tbody></tbody></table>`;
  every(3000, async () => {
    try {
      const t = await api("/triggers");
      document.querySelector("#triggers tbody").innerHTML = t.map((x) => `<tr data-function="${esc(x.function)}">
        <td><a href="#/f/${encodeURIComponent(x.function)}">${esc(x.function)}</a></td><td>${esc(x.subject)}</td>
        <td class="num backlog">${x.backlog ?? "–"}</td><td class="num ${x.dead_letters ? "bad" : ""}">${x.dead_letters ?? "–"}</td></tr>`).join("")
        || `<tr><td colspan="4" class="muted">No event triggers: deploy with --on-event SUBJECT</td></tr>`;
    } catch (e) { failed(e); }
  });
}

// ---- routing --------------------------------------------------------

function failed(e) {
  if (e instanceof Refused) {
    showLogin();
    return;
  }
  let bar = document.getElementById("error");
  if (!bar) {
    bar = document.createElement("p");
    bar.id = "error";
    bar.className = "bad";
    main.prepend(bar);
  }
  bar.textContent = String(e.message || e);
}

async function route() {
  stop();
  if (!sessionStorage.getItem(TOKEN_KEY)) return showLogin();
  try {
    await api("/status");
  } catch (e) {
    if (e instanceof Refused) return showLogin();
  }
  document.getElementById("logout").hidden = false;
  const h = location.hash || "#/";
  if (h.startsWith("#/f/")) return functionPage(decodeURIComponent(h.slice(4)));
  if (h === "#/nodes") return nodesPage();
  if (h === "#/events") return eventsPage();
  return functionsPage();
}

window.addEventListener("hashchange", route);
route();

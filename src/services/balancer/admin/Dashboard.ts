/**
 * The admin server's live dashboard: one self-contained page (no framework, no build step, no
 * request leaves the balancer). It follows `/api/events` (server-sent events; the browser
 * reconnects by itself) and steers through the same JSON API anyone can call.
 *
 * The header says what runs: version, uptime, where the balancer, its proxy and this page listen.
 * With the proxy on, a panel shows its figures (open connections, connections per second, bytes
 * in and out, clients turned away by reason). Every server is a row, sorted by id: state and for how
 * long, weight, active connections, probe round trip, the server's own latency, the last health
 * check, its share of picks over the last 10 seconds and in all, failed checks and connects,
 * re-routes and ejections. A chart shows picks per second per server over the last two minutes,
 * filled from `/api/history` when the page loads. With `--registry`, a Cluster panel
 * (`ClusterPanel.ts`) shows the registry and the balancers in it. A token, when the balancer has one,
 * is asked for on the first refusal and kept for the tab's life only.
 */
import { clusterMarkup, clusterScript, clusterStyle } from "./ClusterPanel.js"

export const page = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>effect-lb</title>
<style>
  :root { --bg:#0f1419; --panel:#171d24; --line:#26303b; --text:#d8dee6; --dim:#8a96a3;
          --live:#3fb950; --dead:#f85149; --draining:#d29922; --accent:#58a6ff; }
  * { box-sizing: border-box; }
  body { margin:0; font:14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; background:var(--bg); color:var(--text); }
  header { display:flex; align-items:center; gap:16px; padding:12px 20px; border-bottom:1px solid var(--line); flex-wrap:wrap; }
  h1 { font-size:18px; margin:0; font-weight:600; }
  h2 { font-size:13px; text-transform:uppercase; letter-spacing:.06em; color:var(--dim); margin:0 0 8px; font-weight:600; }
  main { padding:16px 20px; display:grid; gap:16px; }
  section { background:var(--panel); border:1px solid var(--line); border-radius:8px; padding:12px 16px; overflow-x:auto; }
  .pill { padding:2px 8px; border-radius:999px; font-size:12px; border:1px solid var(--line); color:var(--dim); }
  .pill.on { color:var(--live); border-color:var(--live); }
  .pill.off { color:var(--dead); border-color:var(--dead); }
  .summary { color:var(--dim); }
  .summary b { color:var(--text); font-weight:600; }
  table { width:100%; border-collapse:collapse; font-variant-numeric:tabular-nums; }
  th, td { text-align:left; padding:6px 8px; border-bottom:1px solid var(--line); white-space:nowrap; }
  th { color:var(--dim); font-weight:500; font-size:12px; }
  td.num, th.num { text-align:right; }
  .state { font-weight:600; text-transform:uppercase; font-size:12px; letter-spacing:.04em; }
  .state .seen { font-weight:400; text-transform:none; letter-spacing:0; color:var(--dim); }
  .state-live { color:var(--live); } .state-dead { color:var(--dead); } .state-draining { color:var(--draining); }
  tr.dead td:not(.state):not(.actions) { opacity:.55; }
  .swatch { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:6px; vertical-align:-1px; }
  .bar { display:inline-block; height:8px; background:var(--accent); border-radius:2px; vertical-align:middle; margin-left:6px; }
  .weight-input { width:4.5em; text-align:right; padding:2px 6px; }
  button, select, input { font:inherit; color:var(--text); background:#0b0f14; border:1px solid var(--line); border-radius:6px; padding:4px 10px; }
  button { cursor:pointer; } button:hover { border-color:var(--accent); }
  button.danger:hover { border-color:var(--dead); color:var(--dead); }
  canvas { width:100%; height:220px; display:block; }
  #legend { display:flex; gap:12px; flex-wrap:wrap; color:var(--dim); font-size:12px; margin-top:6px; }
  #message { min-height:1.4em; color:var(--draining); }
  form { display:flex; gap:8px; align-items:center; flex-wrap:wrap; }
  #token-box { display:none; }
  .facts { color:var(--dim); font-size:12px; display:flex; gap:14px; flex-wrap:wrap; padding:6px 20px 0; }
  .facts b { color:var(--text); font-weight:500; }
  #proxy-panel { display:none; }
  .figures { display:flex; gap:28px; flex-wrap:wrap; }
  .figure .value { font-size:20px; font-weight:600; font-variant-numeric:tabular-nums; }
  .figure .label { color:var(--dim); font-size:12px; }
  td.check.bad { color:var(--dead); } td.check.good { color:var(--dim); }
  td.zero { color:var(--dim); }
  .ramp { font-size:11px; color:var(--accent); white-space:nowrap; }
${clusterStyle}</style>
</head>
<body>
<header>
  <h1>effect-lb</h1>
  <span id="connection" class="pill off">connecting</span>
  <span class="summary">strategy <b id="current-strategy">?</b> · <b id="live-count">0</b> live of <b id="server-count">0</b> · <b id="rate">0</b> picks/s</span>
  <form id="strategy-form">
    <select id="strategy" aria-label="strategy"></select>
    <button id="apply-strategy" type="submit">Switch strategy</button>
  </form>
  <form id="token-box"><input id="token" type="password" placeholder="balancer token" aria-label="token"><button type="submit">Use token</button></form>
</header>
<div class="facts">
  <span>version <b id="version">?</b></span>
  <span>up <b id="uptime">?</b></span>
  <span>balancer <b id="listen-balancer">–</b></span>
  <span>proxy <b id="listen-proxy">off</b></span>
  <span>admin <b id="listen-admin">–</b></span>
</div>
<main>
  <div id="message" role="status"></div>
  <section id="proxy-panel">
    <h2>Proxy</h2>
    <div class="figures">
      <div class="figure"><div class="value" id="proxy-open">0</div><div class="label">open connections</div></div>
      <div class="figure"><div class="value" id="proxy-rate">0</div><div class="label">connections/s</div></div>
      <div class="figure"><div class="value" id="proxy-accepted">0</div><div class="label">accepted</div></div>
      <div class="figure"><div class="value" id="proxy-in">0 B</div><div class="label">bytes in</div></div>
      <div class="figure"><div class="value" id="proxy-out">0 B</div><div class="label">bytes out</div></div>
      <div class="figure"><div class="value" id="proxy-away">0</div><div class="label" id="proxy-away-why">turned away</div></div>
    </div>
  </section>
${clusterMarkup}  <section>
    <h2>Servers</h2>
    <table>
      <thead><tr>
        <th>server</th><th>address</th><th>state</th><th>since</th><th class="num">weight</th><th class="num">active</th>
        <th class="num">probe rtt</th><th class="num">latency</th><th>last check</th><th class="num">picks/s</th>
        <th class="num">share (10 s)</th><th class="num">picks</th>
        <th class="num" title="failed health checks / failed proxied connects">failures</th>
        <th class="num">re-routes</th><th class="num">ejections</th><th></th>
      </tr></thead>
      <tbody id="servers"></tbody>
    </table>
  </section>
  <section>
    <h2>Picks per second</h2>
    <canvas id="chart" width="1200" height="220"></canvas>
    <div id="legend"></div>
  </section>
  <section>
    <h2>Add a server</h2>
    <form id="add-form">
      <input id="add-host" placeholder="host" value="127.0.0.1" aria-label="host">
      <input id="add-port" placeholder="port" size="6" aria-label="port">
      <input id="add-weight" placeholder="weight" size="4" value="1" aria-label="weight">
      <button type="submit">Add</button>
    </form>
  </section>
</main>
<script>
"use strict";
const palette = ["#58a6ff","#3fb950","#d29922","#f778ba","#a371f7","#ff7b72","#39c5cf","#e3b341","#8b949e","#56d364"];
const colors = new Map();
// The palette first; past it (up to 50 servers in the playground), hues spread by the golden angle.
const colorOf = (id) => {
  if (!colors.has(id)) {
    const n = colors.size;
    colors.set(id, n < palette.length ? palette[n] : "hsl(" + Math.round((n * 137.508) % 360) + ", 65%, 62%)");
  }
  return colors.get(id);
};
const $ = (id) => document.getElementById(id);
const history = [];          // [{at, rates: Map(id -> picks per second)}], the last two minutes, oldest first
const keep = 120;
let previous = null;         // the last status's pick counts {at, located: Map}: the next rate is taken against it
let token = sessionStorage.getItem("effect-lb-token") || "";
let strategyChosen = false;  // the operator picked a strategy in the menu and has not applied it yet

const say = (text) => { $("message").textContent = text; };
const ago = (ms) => { const s = Math.max(0, Math.round(ms / 1000)); return s < 120 ? s + " s ago" : Math.round(s / 60) + " min ago"; };
const fmt = (ms) => ms === null || ms === undefined ? "–" : ms < 10 ? ms.toFixed(2) + " ms" : ms.toFixed(0) + " ms";
/** A span of time for people: 42 s, 3 min 5 s, 2 h 10 min, 3 d 4 h. */
const span = (ms) => {
  const s = Math.max(0, Math.floor(ms / 1000));
  if (s < 60) return s + " s";
  if (s < 3600) return Math.floor(s / 60) + " min " + (s % 60) + " s";
  if (s < 86400) return Math.floor(s / 3600) + " h " + Math.floor((s % 3600) / 60) + " min";
  return Math.floor(s / 86400) + " d " + Math.floor((s % 86400) / 3600) + " h";
};
const bytes = (n) => {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n.toFixed(0) : n.toFixed(1)) + " " + units[i];
};
/** Ids in a stable, natural order: s2 before s10. */
const byId = (a, b) => a.localeCompare(b, undefined, { numeric: true });

async function call(method, path, body) {
  const headers = { "content-type": "application/json" };
  // Percent-encoded, so a token with spaces or beyond ASCII travels in a header as it is (PROTOCOL.md, section 10).
  if (token) headers.authorization = "Bearer " + encodeURIComponent(token);
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const json = await response.json().catch(() => ({}));
  if (response.status === 401) { $("token-box").style.display = "flex"; say("This balancer needs its token: " + (json.message || "")); return null; }
  if (!response.ok) { say((json._tag || response.status) + ": " + (json.message || "")); return null; }
  say("");
  return json;
}

/** Picks per second of each server between two samples of their counts. */
function rates(before, after) {
  const seconds = Math.max((after.at - before.at) / 1000, 0.001);
  const out = new Map();
  for (const [id, n] of after.located) out.set(id, Math.max(0, n - (before.located.get(id) || 0)) / seconds);
  return out;
}

/** The balancer's own history of the last two minutes, so the chart does not start empty. */
async function loadHistory() {
  const json = await fetch("/api/history").then((r) => r.json()).catch(() => null);
  if (!json || !Array.isArray(json.samples)) return;
  const seconds = (json.intervalMs || 1000) / 1000;
  for (const sample of json.samples.slice(-keep)) {
    history.push({ at: sample.at, rates: new Map(Object.entries(sample.picks).map(([id, n]) => [id, n / seconds])) });
  }
}

/** The mean picks per second of each server over the last n samples. */
function mean(n) {
  const recent = history.slice(-n);
  const out = new Map();
  for (const sample of recent) for (const [id, r] of sample.rates) out.set(id, (out.get(id) || 0) + r / recent.length);
  return out;
}

function renderFacts(status) {
  const info = status.balancer;
  if (!info) return;
  $("version").textContent = info.version;
  $("uptime").textContent = span(info.uptimeSeconds * 1000);
  $("listen-balancer").textContent = info.listening.balancer || "–";
  $("listen-proxy").textContent = info.listening.proxy || "off";
  $("listen-admin").textContent = info.listening.admin || "–";
}

function renderProxy(proxy) {
  $("proxy-panel").style.display = proxy ? "block" : "none";
  if (!proxy) return;
  $("proxy-open").textContent = proxy.open;
  $("proxy-rate").textContent = proxy.connectionsPerSecond.toFixed(proxy.connectionsPerSecond < 10 ? 1 : 0);
  $("proxy-accepted").textContent = proxy.accepted;
  $("proxy-in").textContent = bytes(proxy.bytesIn);
  $("proxy-out").textContent = bytes(proxy.bytesOut);
  const away = proxy.turnedAway;
  $("proxy-away").textContent = away.limit + away.noServer + away.backendsFailed + (away.proxyHeader || 0);
  $("proxy-away-why").textContent = "turned away: " + away.limit + " at limit, " + away.noServer + " no server, " + away.backendsFailed + " backends failed" + (away.proxyHeader === undefined ? "" : ", " + away.proxyHeader + " bad PROXY header");
}

function render(status) {
  const sample = { at: status.at, located: new Map(status.servers.map((s) => [s.id, s.located])) };
  // The chart and the rates step once a second: events that come between (a change) only
  // redraw the table, so the rate is never taken over a few milliseconds.
  if (!previous) previous = sample;
  else if (sample.at - previous.at >= 900) {
    history.push({ at: sample.at, rates: rates(previous, sample) });
    previous = sample;
  }
  while (history.length > keep) history.shift();
  const now = history.length > 0 ? history[history.length - 1].rates : new Map();
  const recent = mean(10);
  const recentTotal = [...recent.values()].reduce((a, b) => a + b, 0);
  const total = [...now.values()].reduce((a, b) => a + b, 0);

  $("current-strategy").textContent = status.strategy;
  // A choice the operator has made but not yet applied is theirs: updates do not undo it.
  if (document.activeElement !== $("strategy") && !strategyChosen) $("strategy").value = status.strategy;
  $("server-count").textContent = status.servers.length;
  $("live-count").textContent = status.servers.filter((s) => s.state === "live").length;
  $("rate").textContent = total.toFixed(0);
  renderFacts(status);
  renderProxy(status.proxy);
  renderCluster(status.cluster, status.at ?? Date.now());

  const body = $("servers");
  const rows = new Map([...body.querySelectorAll("tr")].map((row) => [row.dataset.server, row]));
  const servers = [...status.servers].sort((a, b) => byId(a.id, b.id));
  for (const server of servers) {
    let row = rows.get(server.id);
    rows.delete(server.id);
    if (!row) row = newRow(server);
    // In id order: appending a row that is already there moves it, so the order holds as servers come and go.
    body.appendChild(row);
    fillRow(row, server, status, now, recentTotal > 0 ? (recent.get(server.id) || 0) / recentTotal : 0);
  }
  for (const row of rows.values()) row.remove();
  draw();
}

${clusterScript}
function newRow(server) {
  const row = document.createElement("tr");
  row.dataset.server = server.id;
  row.innerHTML = '<td class="id"></td><td class="address"></td><td class="state"></td><td class="since"></td>' +
    '<td class="num weight"><input class="weight-input" type="number" min="1" max="1000" aria-label="weight">' +
    '<div class="ramp"></div></td>' +
    '<td class="num active"></td><td class="num rtt"></td><td class="num latency"></td><td class="check"></td>' +
    '<td class="num rate"></td><td class="num share"></td><td class="num located"></td>' +
    '<td class="num failures"></td><td class="num reroutes"></td><td class="num ejections"></td>' +
    '<td class="actions"><button class="drain">Drain</button> <button class="remove danger">Remove</button></td>';
  const weightInput = row.querySelector(".weight-input");
  weightInput.onchange = async () => {
    const done = await call("PATCH", "/api/servers/" + encodeURIComponent(server.id), { weight: Number(weightInput.value) });
    if (done) say(server.id + " now weighs " + done.weight);
    weightInput.blur();
  };
  row.querySelector(".drain").onclick = () => call("DELETE", "/api/servers/" + encodeURIComponent(server.id));
  row.querySelector(".remove").onclick = () => call("DELETE", "/api/servers/" + encodeURIComponent(server.id) + "?now=true");
  return row;
}

/** A count cell: dimmed while it is zero. */
function count(cell, n) {
  cell.textContent = n === undefined ? "–" : n;
  cell.classList.toggle("zero", !n);
}

function fillRow(row, server, status, now, share) {
  const at = status.at ?? Date.now();
  row.className = server.state;
  const id = row.querySelector(".id");
  id.innerHTML = "";
  const swatch = document.createElement("span");
  swatch.className = "swatch";
  swatch.style.background = colorOf(server.id);
  id.append(swatch, server.id);
  row.querySelector(".address").textContent = server.host.includes(":") ? "[" + server.host + "]:" + server.port : server.host + ":" + server.port;
  const state = row.querySelector(".state");
  state.textContent = server.state;
  state.className = "state state-" + server.state;
  // A dead server's last figures are history: say when it last answered instead.
  if (server.state === "dead" && server.lastSeenAt !== undefined) {
    const seen = document.createElement("span");
    seen.className = "seen";
    seen.textContent = server.lastSeenAt === null ? " never answered" : " last seen " + ago(at - server.lastSeenAt);
    state.append(seen);
  }
  // Passive health: why it was ejected, and until when at least.
  if (server.ejectedUntil !== undefined) {
    const why = document.createElement("div");
    why.className = "ramp";
    why.textContent = "ejected: " + (server.ejectedReason || "");
    why.title = "returns in " + span(Math.max(0, server.ejectedUntil - at)) + " at the earliest, once a probe answers";
    state.append(why);
  }
  const since = row.querySelector(".since");
  since.textContent = server.stateSince === undefined ? "–" : "for " + span(at - server.stateSince);
  if (server.stateSince !== undefined) since.title = "since " + new Date(server.stateSince).toLocaleString();
  const weightInput = row.querySelector(".weight-input");
  if (document.activeElement !== weightInput) weightInput.value = server.weight;
  // Slow start: the weight it takes now, while it ramps up to its own.
  const ramp = row.querySelector(".ramp");
  ramp.textContent = server.effectiveWeight === undefined ? "" : "slow start " + server.effectiveWeight;
  ramp.title = server.slowStartUntil === undefined ? "" : "full weight in " + span(Math.max(0, server.slowStartUntil - at));
  row.querySelector(".active").textContent = server.state === "dead" ? "–" : server.active;
  row.querySelector(".rtt").textContent = fmt(server.responseTimeMs);
  row.querySelector(".latency").textContent = fmt(server.latencyMs);
  const check = row.querySelector(".check");
  check.textContent = server.lastCheck ? server.lastCheck.result + ", " + ago(at - server.lastCheck.at) : "–";
  check.className = "check " + (server.lastCheck ? (server.lastCheck.ok ? "good" : "bad") : "");
  row.querySelector(".rate").textContent = (now.get(server.id) || 0).toFixed(1);
  const shareCell = row.querySelector(".share");
  shareCell.textContent = (share * 100).toFixed(0) + "%";
  const bar = document.createElement("span");
  bar.className = "bar";
  bar.style.width = Math.round(share * 60) + "px";
  shareCell.append(bar);
  row.querySelector(".located").textContent = server.located;
  const failures = row.querySelector(".failures");
  failures.textContent = server.failedChecks === undefined ? "–" : server.failedChecks + " / " + (server.failedConnects || 0);
  failures.classList.toggle("zero", !server.failedChecks && !server.failedConnects);
  count(row.querySelector(".reroutes"), server.reroutes);
  count(row.querySelector(".ejections"), server.ejections);
}

function draw() {
  const canvas = $("chart");
  const ratio = window.devicePixelRatio || 1;
  const width = canvas.clientWidth * ratio, height = canvas.clientHeight * ratio;
  if (canvas.width !== width || canvas.height !== height) { canvas.width = width; canvas.height = height; }
  const g = canvas.getContext("2d");
  g.clearRect(0, 0, width, height);
  // Every server seen in the window has a line; a second it was not picked in is a zero.
  const ids = new Set();
  for (const sample of history) for (const id of sample.rates.keys()) ids.add(id);
  if (previous) for (const id of previous.located.keys()) ids.add(id);
  const series = new Map([...ids].sort(byId).map((id) => [id, history.map((sample, i) => [i, sample.rates.get(id) || 0])]));
  let max = 1;
  for (const points of series.values()) for (const [, r] of points) max = Math.max(max, r);
  const pad = 28 * ratio;
  const offset = keep - history.length;  // the newest sample at the right edge
  const x = (i) => pad + ((i + offset) / Math.max(keep - 1, 1)) * (width - pad - 8 * ratio);
  const y = (r) => height - 16 * ratio - (r / max) * (height - 28 * ratio);
  g.strokeStyle = "#26303b"; g.fillStyle = "#8a96a3"; g.font = 11 * ratio + "px system-ui"; g.lineWidth = 1;
  for (const f of [0, 0.5, 1]) {
    g.beginPath(); g.moveTo(pad, y(max * f)); g.lineTo(width, y(max * f)); g.stroke();
    g.fillText((max * f).toFixed(0), 2, y(max * f) + 4 * ratio);
  }
  g.lineWidth = 2 * ratio;
  for (const [id, points] of series) {
    g.strokeStyle = colorOf(id);
    g.beginPath();
    points.forEach(([i, r], n) => (n === 0 ? g.moveTo(x(i), y(r)) : g.lineTo(x(i), y(r))));
    g.stroke();
  }
  $("legend").replaceChildren(...[...series.keys()].map((id) => {
    const item = document.createElement("span");
    const swatch = document.createElement("span");
    swatch.className = "swatch"; swatch.style.background = colorOf(id);
    item.append(swatch, id);
    return item;
  }));
  $("chart").dataset.samples = history.length;
}

function connect() {
  const events = new EventSource("/api/events");
  events.onopen = () => { $("connection").textContent = "live"; $("connection").className = "pill on"; };
  events.onerror = () => { $("connection").textContent = "reconnecting"; $("connection").className = "pill off"; };
  events.onmessage = (event) => render(JSON.parse(event.data));
}

$("strategy").onchange = () => { strategyChosen = true; };
$("strategy-form").onsubmit = async (event) => {
  event.preventDefault();
  const strategy = $("strategy").value;
  strategyChosen = false;
  const done = await call("POST", "/api/strategy", { strategy });
  if (done) { $("current-strategy").textContent = done.strategy; say("strategy switched to " + done.strategy); }
};
$("token-box").onsubmit = (event) => {
  event.preventDefault();
  token = $("token").value;
  sessionStorage.setItem("effect-lb-token", token);
  $("token-box").style.display = "none";
  say("token set; try again");
};
$("add-form").onsubmit = async (event) => {
  event.preventDefault();
  const added = await call("POST", "/api/servers", {
    host: $("add-host").value, port: Number($("add-port").value), weight: Number($("add-weight").value || 1)
  });
  if (added) say("added " + added.id);
};
window.addEventListener("resize", draw);

fetch("/api/strategies").then((r) => r.json()).then((names) => {
  for (const name of names) {
    const option = document.createElement("option");
    option.value = name; option.textContent = name;
    $("strategy").append(option);
  }
  return loadHistory();
}).finally(connect);
</script>
</body>
</html>
`

/**
 * The dashboard's Cluster panel, shown only when the status has a `cluster` (the balancer runs with
 * `--registry`): the registry line (connected in green, not in red; url, namespace, revision, sync
 * lag, stale) and a table of the balancers (id, addresses, version, up for, last seen), this one
 * marked. Ids, addresses and versions come from other balancers: they go into the page as text
 * (`textContent`, `dataset`), never as markup.
 *
 * Pieces of `Dashboard.page`: its style, its markup and its script (which uses the page's `$`,
 * `span`, `ago` and `fmt`).
 */

export const clusterStyle = `
  #cluster-panel { display:none; }
  .registry { display:flex; gap:10px; align-items:center; flex-wrap:wrap; margin-bottom:8px; color:var(--dim); }
  tr.self td.balancer-id { font-weight:600; }
  .self-mark { color:var(--accent); font-weight:400; margin-left:6px; }
`

export const clusterMarkup = `
  <section id="cluster-panel">
    <h2>Cluster</h2>
    <div class="registry"><span id="registry-state" class="pill off">not connected</span><span id="registry-facts"></span></div>
    <table>
      <thead><tr><th>balancer</th><th>addresses</th><th>version</th><th>up</th><th>last seen</th></tr></thead>
      <tbody id="balancers"></tbody>
    </table>
    <div id="balancers-more" class="summary"></div>
  </section>
`

export const clusterScript = `
/** The registry and the balancers in the cluster; the panel hides when the status has no cluster. */
function renderCluster(cluster, at) {
  $("cluster-panel").style.display = cluster ? "block" : "none";
  if (!cluster) return;
  const registry = cluster.registry;
  const state = $("registry-state");
  state.textContent = registry.connected ? "connected" : "not connected";
  state.className = "pill " + (registry.connected ? "on" : "off");
  $("registry-facts").textContent = [
    registry.url,
    "namespace " + registry.namespace,
    "revision " + registry.revision,
    ...(registry.syncLagSeconds === undefined ? [] : ["sync lag " + fmt(registry.syncLagSeconds * 1000)]),
    ...(cluster.stale ? ["stale: the registry did not answer, the last list read"] : [])
  ].join(" · ");
  $("balancers").replaceChildren(...cluster.balancers.map((member) => balancerRow(member, at)));
  const more = (cluster.total ?? cluster.balancers.length) - cluster.balancers.length;
  $("balancers-more").textContent = more > 0 ? "and " + more + " more" : "";
}

/** One balancer of the cluster as a row; every value is set as text. */
function balancerRow(member, at) {
  const row = document.createElement("tr");
  row.dataset.balancer = member.id;
  if (member.self) row.className = "self";
  const cell = (name, text) => {
    const td = document.createElement("td");
    td.className = name;
    td.textContent = text;
    row.append(td);
    return td;
  };
  const id = cell("balancer-id", member.id);
  if (member.self) {
    const mark = document.createElement("span");
    mark.className = "self-mark";
    mark.textContent = "this one";
    id.append(mark);
  }
  cell("addresses", Object.entries(member.addresses).map(([role, where]) => role + " " + where).join(", ") || "–");
  cell("version", member.version);
  cell("up", span(at - member.startedAt)).title = "since " + new Date(member.startedAt).toLocaleString();
  cell("seen", ago(at - member.lastSeenAt));
  return row;
}
`

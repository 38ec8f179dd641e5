/** `effect-lb status` with `--registry`: the shared registry and the balancers in the cluster, for people. */
import type { ClusterView } from "../domain/Protocol.js"

type Member = ClusterView["balancers"][number]

/** Text from another balancer, safe for a terminal: control characters shown as `\u{…}`, not obeyed. */
export const printable = (text: string): string =>
  text.replace(/\p{Cc}/gu, (char) => `\\u{${(char.codePointAt(0) ?? 0).toString(16)}}`)

/** A span of time, whole seconds, for people: 42s, 3m 5s, 2h 10m, 3d 4h. */
export const span = (ms: number): string => {
  const s = Math.max(0, Math.floor(ms / 1000))
  if (s < 60) return `${s}s`
  if (s < 3600) return `${Math.floor(s / 60)}m ${s % 60}s`
  if (s < 86400) return `${Math.floor(s / 3600)}h ${Math.floor((s % 3600) / 60)}m`
  return `${Math.floor(s / 86400)}d ${Math.floor((s % 86400) / 3600)}h`
}

const lag = (seconds: number) => (seconds < 1 ? `${Math.round(seconds * 1000)} ms` : `${seconds.toFixed(1)} s`)

/** `url, namespace N: connected, revision R, sync lag L`. */
const registryLine = ({ registry }: ClusterView) =>
  `registry: ${printable(registry.url)}, namespace ${printable(registry.namespace)}: ` +
  [
    registry.connected ? "connected" : "not connected",
    `revision ${registry.revision}`,
    ...(registry.syncLagSeconds === undefined ? [] : [`sync lag ${lag(registry.syncLagSeconds)}`])
  ].join(", ")

const addressesCell = (addresses: Member["addresses"]) =>
  Object.entries(addresses)
    .filter((entry): entry is [string, string] => typeof entry[1] === "string")
    .map(([role, at]) => `${role} ${printable(at)}`)
    .join(", ") || "-"

const pad = (cells: ReadonlyArray<string>, widths: ReadonlyArray<number>) =>
  cells
    .map((cell, i) => cell.padEnd(widths[i] ?? 0))
    .join("  ")
    .trimEnd()

/**
 * The registry line, then one line per balancer (`now` in ms since the epoch: ages are taken against
 * it, each balancer's times being by its own clock), and how many more there are when the list was cut.
 */
export const clusterBlock = (cluster: ClusterView, now: number): string => {
  const header = ["BALANCER", "ADDRESSES", "VERSION", "UP", "LAST SEEN"]
  const rows = cluster.balancers.map((member) => [
    `${printable(member.id)}${member.self ? " (this one)" : ""}`,
    addressesCell(member.addresses),
    printable(member.version),
    span(now - member.startedAt),
    `${span(now - member.lastSeenAt)} ago`
  ])
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((row) => (row[i] ?? "").length)))
  const count = cluster.total ?? cluster.balancers.length
  const lines = [
    registryLine(cluster),
    `balancers: ${count}${cluster.stale === true ? " (stale: the registry did not answer; the last list read)" : ""}`,
    pad(header, widths),
    ...rows.map((row) => pad(row, widths))
  ]
  if (count > cluster.balancers.length) lines.push(`and ${count - cluster.balancers.length} more`)
  return lines.join("\n")
}

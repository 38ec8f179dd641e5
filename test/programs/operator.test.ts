import { describe, expect, it } from "@effect/vitest"
import type { ClusterView } from "../../src/domain/Protocol.js"
import type { ServerView } from "../../src/domain/Server.js"
import { clusterBlock } from "../../src/programs/clusterStatus.js"
import { statusTable } from "../../src/programs/operator.js"
import { spec } from "../support/balancer.js"

const view = (n: number, state: ServerView["state"], lastSeenAt: number | null): ServerView => ({
  ...spec(n),
  state,
  active: state === "dead" ? 0 : 3,
  responseTimeMs: 1.5,
  latencyMs: null,
  located: 0,
  lastSeenAt
})

describe("effect-lb status", () => {
  it("shows when a dead server was last seen, and no load for it", () => {
    const table = statusTable(
      "round-robin",
      [view(1, "live", 9_000), view(2, "dead", 2_000), view(3, "dead", null)],
      14_400
    )
    expect(table).toMatch(/^s1\s+127\.0\.0\.1:41001\s+1\s+live\s+3\s/m)
    expect(table).toMatch(/^s2\s+127\.0\.0\.1:41002\s+1\s+dead \(last seen 12s ago\)\s+-\s/m)
    expect(table).toMatch(/^s3\s+127\.0\.0\.1:41003\s+1\s+dead \(never answered\)\s+-\s/m)
  })
})

const cluster = (more: Partial<ClusterView> = {}): ClusterView => ({
  registry: {
    connected: true,
    revision: 42,
    namespace: "effect-lb",
    url: "redis://10.0.0.9:6379",
    syncLagSeconds: 0.004
  },
  balancers: [
    {
      id: "lb-a",
      addresses: { balancer: "10.0.0.1:4000", admin: "127.0.0.1:9000" },
      version: "0.1.0",
      startedAt: 0,
      lastSeenAt: 185_000,
      self: true
    },
    { id: "lb-b\u001b[2J", addresses: {}, version: "0.2.0", startedAt: 60_000, lastSeenAt: 184_000, self: false }
  ],
  ...more
})

describe("effect-lb status with --registry", () => {
  it("shows the registry, and each balancer with its addresses, version, uptime and last heartbeat", () => {
    const block = clusterBlock(cluster(), 186_000)
    expect(block).toMatch(
      /^registry: redis:\/\/10\.0\.0\.9:6379, namespace effect-lb: connected, revision 42, sync lag 4 ms$/m
    )
    expect(block).toMatch(/^balancers: 2$/m)
    expect(block).toMatch(/^BALANCER\s+ADDRESSES\s+VERSION\s+UP\s+LAST SEEN$/m)
    expect(block).toMatch(
      /^lb-a \(this one\)\s+balancer 10\.0\.0\.1:4000, admin 127\.0\.0\.1:9000\s+0\.1\.0\s+3m 6s\s+1s ago$/m
    )
    // Another balancer's id cannot drive the terminal: its control characters are shown, not sent.
    expect(block).not.toContain("\u001b")
    expect(block).toMatch(/^lb-b\\u\{1b\}\[2J\s+-\s+0\.2\.0\s+2m 6s\s+2s ago$/m)
    expect(block).not.toMatch(/more|stale/)
  })

  it("says when the registry is not connected and the list is the last one read, and how many were left out", () => {
    const block = clusterBlock(
      cluster({
        registry: { connected: false, revision: 3, namespace: "x", url: "redis://r:1" },
        stale: true,
        total: 70
      }),
      186_000
    )
    expect(block).toMatch(/^registry: redis:\/\/r:1, namespace x: not connected, revision 3$/m)
    expect(block).toMatch(/^balancers: 70 \(stale: the registry did not answer; the last list read\)$/m)
    expect(block).toMatch(/^and 68 more$/m)
  })
})

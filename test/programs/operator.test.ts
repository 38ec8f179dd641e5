import { describe, expect, it } from "@effect/vitest"
import type { ServerView } from "../../src/domain/Server.js"
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

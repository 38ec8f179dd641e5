import { describe, expect, it } from "@effect/vitest"
import { ServerId } from "../../../../src/domain/Server.js"
import * as History from "../../../../src/services/balancer/admin/History.js"

const counts = (located: Record<string, number>) =>
  Object.entries(located).map(([id, n]) => ({ id: ServerId.make(id), located: n }))

describe("the history ring", () => {
  it("keeps the picks of each second, only of the servers picked, against the counts before", () => {
    const ring = new History.Ring(3)
    ring.record(0, counts({ a: 10, b: 4 }))
    expect(ring.read()).toEqual([])
    ring.record(1000, counts({ a: 15, b: 4, c: 2 }))
    expect(ring.read().map(History.toJson)).toEqual([{ at: 1000, picks: { a: 5, c: 2 } }])
  })

  it("holds its length at most, oldest first, however long it runs", () => {
    const ring = new History.Ring(3)
    for (let second = 0; second <= 10; second++) ring.record(second * 1000, counts({ a: second * 2 }))
    expect(ring.read().map(History.toJson)).toEqual([
      { at: 8000, picks: { a: 2 } },
      { at: 9000, picks: { a: 2 } },
      { at: 10000, picks: { a: 2 } }
    ])
  })

  it("counts a server that left and came back (its count begun again) from its new count", () => {
    const ring = new History.Ring(3)
    ring.record(0, counts({ a: 50 }))
    ring.record(1000, counts({ a: 3 }))
    ring.record(2000, counts({ a: 7 }))
    expect(ring.read().map(History.toJson)).toEqual([
      { at: 1000, picks: {} },
      { at: 2000, picks: { a: 4 } }
    ])
  })
})

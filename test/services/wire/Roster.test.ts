import { describe, expect, it } from "@effect/vitest"
import { Roster } from "../../../src/services/wire/Roster.js"

describe("Roster", () => {
  it("lists its members in joining order and counts them", () => {
    const roster = new Roster<string>()
    roster.join("a")
    const b = roster.join("b")
    roster.join("c")
    expect([...roster]).toEqual(["a", "b", "c"])
    expect(roster.size).toBe(3)
    roster.leave(b)
    expect([...roster]).toEqual(["a", "c"])
    expect(roster.size).toBe(2)
  })

  it("lets the first, the last and the only member leave", () => {
    const roster = new Roster<string>()
    const a = roster.join("a")
    roster.join("b")
    const c = roster.join("c")
    roster.leave(a)
    roster.leave(c)
    expect([...roster]).toEqual(["b"])
    const d = roster.join("d")
    expect([...roster]).toEqual(["b", "d"])
    roster.leave(d)
    expect([...roster]).toEqual(["b"])
  })

  it("ignores a member leaving twice", () => {
    const roster = new Roster<string>()
    const a = roster.join("a")
    roster.join("b")
    roster.leave(a)
    roster.leave(a)
    expect(roster.size).toBe(1)
    expect(a.listed).toBe(false)
  })

  it("goes on past a member that leaves while it is handed out", () => {
    const roster = new Roster<string>()
    const places = new Map(["a", "b", "c", "d"].map((name) => [name, roster.join(name)]))
    const seen: Array<string> = []
    for (const name of roster) {
      seen.push(name)
      const place = places.get(name)
      if (name !== "c" && place !== undefined) roster.leave(place)
    }
    expect(seen).toEqual(["a", "b", "c", "d"])
    expect([...roster]).toEqual(["c"])
    expect(roster.size).toBe(1)
  })

  it("lets go of a member that left, and of its neighbours", () => {
    const roster = new Roster<{ readonly name: string }>()
    roster.join({ name: "a" })
    const b = roster.join({ name: "b" })
    roster.join({ name: "c" })
    roster.leave(b)
    expect(b.value).toBeUndefined()
    expect(b.before).toBeUndefined()
    expect(b.after).toBeUndefined()
  })
})

import { describe, expect, it } from "@effect/vitest"
import { named } from "../../src/programs/cli.js"

describe("the command line loads only the programs a line names", () => {
  it("loads the one program the first word that is not a flag names", () => {
    expect(named(["status", "--balancer", "127.0.0.1:8000"])).toEqual(["status"])
    expect(named(["--json", "client", "--out", "server", "download", "notes.txt"])).toEqual(["client"])
  })

  it("loads every program for help, a typo, a global flag's value or no arguments, and none for a bare --version", () => {
    const every = ["playground", "balancer", "server", "client", "status", "strategy", "check-config"]
    expect(named(["--help"])).toEqual(every)
    expect(named(["balncer"])).toEqual(every)
    expect(named(["bogus", "status"])).toEqual(every)
    expect(named(["--log-level", "debug", "status"])).toEqual(every)
    expect(named([])).toEqual(every)
    expect(named(["--version"])).toEqual([])
  })
})

import { describe, expect, it } from "@effect/vitest"
import { Effect, Scope } from "effect"
import { spawn } from "./process.js"

/** Whether a process with this pid is still running (signal 0 only checks). */
const alive = (pid: number) => {
  try {
    process.kill(pid, 0)
    return true
  } catch {
    return false
  }
}

describe("processes started by a test", () => {
  let leaked: number | undefined

  it.effect("a test whose scope never closes (as when vitest times it out) leaves its process running...", () =>
    Effect.gen(function* () {
      // A scope nobody closes: its finalizer, the usual way a process is stopped, never runs.
      const running = yield* spawn(["server", "--port", "0"]).pipe(Scope.extend(yield* Scope.make()))
      leaked = running.child.pid
      expect(leaked).toBeDefined()
      expect(alive(leaked ?? 0)).toBe(true)
    })
  )

  it.live("...until the test is over: the next test finds it stopped", () =>
    Effect.gen(function* () {
      const pid = leaked ?? 0
      expect(pid).toBeGreaterThan(0)
      // SIGKILLed after the previous test; the kernel reaps it a moment later.
      const deadline = Date.now() + 2000
      while (alive(pid) && Date.now() < deadline) yield* Effect.sleep("20 millis")
      expect(alive(pid)).toBe(false)
    })
  )
})

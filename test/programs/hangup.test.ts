import { describe, expect, it } from "@effect/vitest"
import { Effect, Ref } from "effect"
import { holdHangups, reloadingOnHangup } from "../../src/programs/hangup.js"

const listeners = () => process.listenerCount("SIGHUP")

describe("SIGHUP while the balancer starts", () => {
  it.live(
    "is held from the start and makes one reload once the reloader takes SIGHUP over; later ones reload too",
    () =>
      Effect.gen(function* () {
        const before = listeners()
        const reloads = yield* Ref.make(0)
        holdHangups()
        holdHangups()
        expect(listeners()).toBe(before + 1)
        // Two while starting: a listener is there, so neither ends the process; they make one reload.
        process.emit("SIGHUP", "SIGHUP")
        process.emit("SIGHUP", "SIGHUP")
        yield* Effect.scoped(
          Effect.gen(function* () {
            yield* reloadingOnHangup(Ref.update(reloads, (n) => n + 1))
            expect(listeners()).toBe(before + 1)
            yield* Effect.sleep("20 millis")
            expect(yield* Ref.get(reloads)).toBe(1)
            process.emit("SIGHUP", "SIGHUP")
            yield* Effect.sleep("20 millis")
            expect(yield* Ref.get(reloads)).toBe(2)
          })
        )
        expect(listeners()).toBe(before)
      })
  )
})

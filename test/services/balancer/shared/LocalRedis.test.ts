import { describe, expect, it } from "@effect/vitest"
import { Effect, Exit, Scope } from "effect"
import * as Net from "node:net"
import * as LocalRedis from "../../../../src/services/balancer/shared/LocalRedis.js"
import { haveRedis, redisServerPath, redisSkipReason } from "../../../support/redis.js"

if (!haveRedis) console.warn(redisSkipReason)

/** What Redis answers to one PING on 127.0.0.1:`port`, or the connection's error. */
const ping = (port: number) =>
  Effect.async<string>((resume) => {
    const socket = Net.createConnection({ host: "127.0.0.1", port })
    socket.once("error", (error: NodeJS.ErrnoException) => resume(Effect.succeed(error.code ?? error.message)))
    socket.once("data", (chunk: Buffer) => {
      socket.destroy()
      resume(Effect.succeed(chunk.toString().trim()))
    })
    socket.write("PING\r\n")
    return Effect.sync(() => socket.destroy())
  }).pipe(Effect.timeout("2 seconds"))

describe("a private redis-server", () => {
  it.scopedLive("fails with RedisServerMissing, at once, when the program is not installed", () =>
    Effect.gen(function* () {
      const started = Date.now()
      const error = yield* Effect.flip(
        LocalRedis.start({ ...LocalRedis.defaults, command: "effect-lb-no-such-redis-server" })
      )
      expect(error._tag).toBe("RedisServerMissing")
      expect(error.message).toBe("effect-lb-no-such-redis-server is not installed (apt-get install redis-server)")
      expect(Date.now() - started).toBeLessThan(2000)
    })
  )

  it.scopedLive.skipIf(!haveRedis)(
    "answers PING on a free loopback port, and is gone when its scope closes",
    () =>
      Effect.gen(function* () {
        const scope = yield* Scope.make()
        const redis = yield* LocalRedis.start({ ...LocalRedis.defaults, command: redisServerPath }).pipe(
          Scope.extend(scope)
        )
        expect(redis.target).toEqual({ host: "127.0.0.1", port: redis.port, db: 0, tls: false })
        expect(yield* ping(redis.port)).toBe("+PONG")
        yield* Scope.close(scope, Exit.void)
        expect(yield* ping(redis.port)).toBe("ECONNREFUSED")
      }),
    15_000
  )

  it.scopedLive("says why a program that exits at once did not start", () =>
    Effect.gen(function* () {
      const error = yield* Effect.flip(LocalRedis.start({ ...LocalRedis.defaults, command: "false" }))
      expect(error._tag).toBe("RedisDidNotStart")
      expect(error.message).toBe("false did not start: exited with code 1")
    })
  )
})

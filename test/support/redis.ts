/**
 * A real `redis-server` (Debian's) for the shared-registry tests: on a free loopback port, nothing
 * saved to disk, stopped with the scope — and, as a backstop, after every test and when this process
 * exits, like the children of process.ts. Where `redis-server` is missing, `haveRedis` is false and a
 * test file says so (`redisSkipReason`) and skips.
 */
import { afterEach } from "@effect/vitest"
import { Effect, Schedule, type Scope } from "effect"
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Net from "node:net"

export const redisServerPath = process.env["REDIS_SERVER_PATH"] ?? "/usr/bin/redis-server"
export const haveRedis = Fs.existsSync(redisServerPath)
export const redisSkipReason = `Redis tests skipped: no redis-server at ${redisServerPath} (apt-get install redis-server, or set REDIS_SERVER_PATH)`

export interface RunningRedis {
  readonly port: number
  readonly url: string
  readonly child: ChildProcess.ChildProcess
}

const children = new Set<ChildProcess.ChildProcess>()
const stop = (child: ChildProcess.ChildProcess) => {
  if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
}
const stopAll = () => children.forEach(stop)
afterEach(stopAll)
process.once("exit", stopAll)

/** A port free on 127.0.0.1 a moment ago (the OS picks it). */
const freePort = Effect.async<number, Error>((resume) => {
  const server = Net.createServer()
  server.once("error", (error) => resume(Effect.fail(error)))
  server.listen(0, "127.0.0.1", () => {
    const address = server.address()
    const port = typeof address === "object" && address !== null ? address.port : 0
    server.close(() => resume(Effect.succeed(port)))
  })
})

/** One PING on a fresh connection: true when it answers PONG within `waitMs`. */
const pong = (port: number, waitMs = 200) =>
  Effect.async<boolean>((resume) => {
    const socket = Net.createConnection({ host: "127.0.0.1", port })
    let answer = ""
    const finish = (ok: boolean) => {
      clearTimeout(timer)
      socket.destroy()
      resume(Effect.succeed(ok))
    }
    const timer = setTimeout(() => finish(false), waitMs)
    socket.on("error", () => finish(false))
    socket.on("data", (chunk: Buffer) => {
      answer += chunk.toString()
      if (answer.includes("\r\n")) finish(answer.startsWith("+PONG"))
    })
    socket.write("PING\r\n")
    return Effect.sync(() => {
      clearTimeout(timer)
      socket.destroy()
    })
  })

/** Starts `redis-server` on `port` and waits (at most `deadlineMs`) until it answers PING. */
const startOn = (port: number, deadlineMs: number) =>
  Effect.gen(function* () {
    const child = ChildProcess.spawn(
      redisServerPath,
      ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
      { stdio: "ignore" }
    )
    children.add(child)
    child.once("exit", () => children.delete(child))
    child.once("error", () => undefined)
    const answered = yield* pong(port).pipe(
      Effect.flatMap((ok) => (ok ? Effect.void : Effect.fail("no PONG yet"))),
      Effect.retry({
        schedule: Schedule.spaced("10 millis"),
        while: () => child.exitCode === null && child.signalCode === null
      }),
      Effect.timeout(deadlineMs),
      Effect.as(true),
      Effect.orElseSucceed(() => false)
    )
    if (!answered) stop(child)
    return answered ? child : undefined
  })

/**
 * A `redis-server` on a free loopback port (or on `port`, once `freeRedisPort` gave it), answering
 * PING, stopped with the scope. A free port taken between the pick and the start is tried again with
 * another (three times at most).
 */
export const startRedis = (
  options: { readonly port?: number; readonly deadlineMs?: number } = {}
): Effect.Effect<RunningRedis, Error, Scope.Scope> =>
  Effect.acquireRelease(
    Effect.gen(function* () {
      const deadlineMs = options.deadlineMs ?? 3000
      for (let attempt = 0; attempt < (options.port === undefined ? 3 : 1); attempt++) {
        const port = options.port ?? (yield* freePort)
        const child = yield* startOn(port, deadlineMs)
        if (child !== undefined) return { port, url: `redis://127.0.0.1:${port}`, child }
      }
      return yield* Effect.fail(new Error(`redis-server did not answer PING within ${deadlineMs} ms`))
    }),
    (redis) => Effect.sync(() => stop(redis.child))
  )

/** A loopback port nothing listens on now: for a Redis that is to start later. */
export const freeRedisPort = freePort

/**
 * A private `redis-server` (Debian's) for balancers on one machine to share a registry: a child
 * process on a free loopback port, saving nothing to disk, answering PING within a deadline, and
 * stopped with its scope (SIGTERM, then SIGKILL if it lingers) — and, as a backstop, when this
 * process exits. The playground's `--balancers N` starts one.
 */
import { Deferred, Duration, Effect, Schedule, Schema, type Scope } from "effect"
import * as ChildProcess from "node:child_process"
import * as Net from "node:net"
import type { RegistryTarget } from "./RedisStore.js"

export interface LocalRedisConfig {
  /** The program to run: `redis-server`, looked up on PATH. */
  readonly command: string
  /** Started and answering PING within this long, or given up. */
  readonly startTimeout: Duration.DurationInput
  /** How long a stopped Redis has to exit after SIGTERM before it is killed. */
  readonly stopTimeout: Duration.DurationInput
}

export const defaults: LocalRedisConfig = {
  command: "redis-server",
  startTimeout: Duration.seconds(5),
  stopTimeout: Duration.seconds(2)
}

export interface LocalRedis {
  readonly port: number
  /** Where a balancer's `RedisStore` finds it. */
  readonly target: RegistryTarget
}

/** The program is not installed (or not on PATH). */
export class RedisServerMissing extends Schema.TaggedError<RedisServerMissing>()("RedisServerMissing", {
  command: Schema.String
}) {
  override get message(): string {
    return `${this.command} is not installed (apt-get install redis-server)`
  }
}

/** It ran, but did not answer PING in time (or exited first: `reason` says how, with its last words). */
export class RedisDidNotStart extends Schema.TaggedError<RedisDidNotStart>()("RedisDidNotStart", {
  command: Schema.String,
  reason: Schema.String
}) {
  override get message(): string {
    return `${this.command} did not start: ${this.reason}`
  }
}

const host = "127.0.0.1"
/** Starts on a port another process took between the pick and the start are tried again, this often at most. */
const attempts = 3
/** What Redis printed, kept for the reason it stopped: the last this many characters. */
const keptOutput = 2000

/** A port free on 127.0.0.1 a moment ago (the OS picks it). */
const freePort = (command: string) =>
  Effect.async<number, RedisDidNotStart>((resume) => {
    const server = Net.createServer()
    server.once("error", (error) =>
      resume(Effect.fail(new RedisDidNotStart({ command, reason: `no free port: ${error.message}` })))
    )
    server.listen(0, host, () => {
      const address = server.address()
      const port = typeof address === "object" && address !== null ? address.port : 0
      server.close(() => resume(Effect.succeed(port)))
    })
    return Effect.sync(() => server.close())
  })

/** One PING on a fresh connection: succeeds on `+PONG`, fails on anything else; 200 ms at most. */
const ping = (port: number) =>
  Effect.async<void, string>((resume) => {
    const socket = Net.createConnection({ host, port })
    let answer = ""
    socket.once("error", (error) => resume(Effect.fail(error.message)))
    socket.on("data", (chunk: Buffer) => {
      answer = (answer + chunk.toString()).slice(0, 100)
      if (!answer.includes("\r\n")) return
      socket.destroy()
      resume(answer.startsWith("+PONG") ? Effect.void : Effect.fail(answer.trim()))
    })
    socket.write("PING\r\n")
    return Effect.sync(() => socket.destroy())
  }).pipe(Effect.timeoutFail({ duration: "200 millis", onTimeout: () => "no answer" }))

const isRunning = (child: ChildProcess.ChildProcess) => child.exitCode === null && child.signalCode === null

/** Stops the child: SIGTERM, and SIGKILL if it has not exited within `timeout`. */
const stop = (child: ChildProcess.ChildProcess, exited: Deferred.Deferred<string>, timeout: Duration.DurationInput) =>
  Effect.gen(function* () {
    if (!isRunning(child)) return
    child.kill("SIGTERM")
    const gone = yield* Deferred.await(exited).pipe(Effect.timeout(timeout), Effect.option)
    if (gone._tag === "None" && isRunning(child)) child.kill("SIGKILL")
  })

/** A started child: word of its end (how, as text), whether it was missing, and what it said. */
interface Child {
  readonly process: ChildProcess.ChildProcess
  readonly exited: Deferred.Deferred<string>
  readonly missing: Deferred.Deferred<void>
  readonly said: () => string
}

/** Runs the program on `port` (at once: waiting for it is `ready`'s). */
const spawnOn = (config: LocalRedisConfig, port: number) =>
  Effect.gen(function* () {
    const exited = yield* Deferred.make<string>()
    const missing = yield* Deferred.make<void>()
    const child = ChildProcess.spawn(
      config.command,
      ["--port", String(port), "--bind", host, "--save", "", "--appendonly", "no", "--loglevel", "warning"],
      // Its own process group: the playground stops it after the balancers that use it, not on the
      // terminal's Ctrl-C at the same moment as them.
      { stdio: ["ignore", "pipe", "pipe"], detached: true }
    )
    const backstop = () => {
      if (isRunning(child)) child.kill("SIGKILL")
    }
    process.once("exit", backstop)
    let said = ""
    const keep = (chunk: Buffer) => (said = (said + chunk.toString()).slice(-keptOutput))
    child.stdout?.on("data", keep)
    child.stderr?.on("data", keep)
    child.once("error", (error: NodeJS.ErrnoException) => {
      process.removeListener("exit", backstop)
      if (error.code === "ENOENT") Deferred.unsafeDone(missing, Effect.void)
      Deferred.unsafeDone(exited, Effect.succeed(error.message))
    })
    child.once("exit", (code, signal) => {
      process.removeListener("exit", backstop)
      Deferred.unsafeDone(exited, Effect.succeed(signal === null ? `exited with code ${code}` : `killed by ${signal}`))
    })
    return { process: child, exited, missing, said: () => said } satisfies Child
  })

/** Why the child ended before it answered: missing, its port taken (worth another), or its last words. */
const whyEnded = (config: LocalRedisConfig, child: Child, how: string) =>
  Effect.flatMap(
    Deferred.isDone(child.missing),
    (isMissing): Effect.Effect<"PortTaken", RedisServerMissing | RedisDidNotStart> => {
      if (isMissing) return Effect.fail(new RedisServerMissing({ command: config.command }))
      if (/address already in use/i.test(child.said())) return Effect.succeed("PortTaken")
      const last = child.said().trim().split("\n").slice(-1)[0]?.trim() ?? ""
      return Effect.fail(
        new RedisDidNotStart({ command: config.command, reason: last === "" ? how : `${how}: ${last}` })
      )
    }
  )

/** Waits until the child answers PING (`Ready`) or ends (`PortTaken`, or a failure), within the start-up deadline. */
const ready = (config: LocalRedisConfig, child: Child, port: number) => {
  const answered = ping(port).pipe(
    Effect.retry(Schedule.spaced("20 millis")),
    // The schedule never ends: the start-up deadline below does.
    Effect.orElse(() => Effect.never),
    Effect.as("Ready" as const)
  )
  const ended = Effect.flatMap(Deferred.await(child.exited), (how) => whyEnded(config, child, how))
  return Effect.raceFirst(answered, ended).pipe(
    Effect.timeoutFail({
      duration: config.startTimeout,
      onTimeout: () =>
        new RedisDidNotStart({
          command: config.command,
          reason: `no answer to PING within ${Duration.format(Duration.decode(config.startTimeout))}`
        })
    }),
    Effect.tapError(() => stop(child.process, child.exited, config.stopTimeout))
  )
}

/**
 * Starts a private Redis on a free loopback port, answering PING, stopped with the scope. Fails with
 * `RedisServerMissing` when the program is not installed.
 */
export const start = (
  config: LocalRedisConfig = defaults
): Effect.Effect<LocalRedis, RedisServerMissing | RedisDidNotStart, Scope.Scope> =>
  Effect.gen(function* () {
    for (let attempt = 1; attempt <= attempts; attempt++) {
      const port = yield* freePort(config.command)
      const child = yield* Effect.acquireRelease(spawnOn(config, port), (child) =>
        stop(child.process, child.exited, config.stopTimeout)
      )
      if ((yield* ready(config, child, port)) === "Ready") return { port, target: { host, port, db: 0, tls: false } }
    }
    return yield* new RedisDidNotStart({
      command: config.command,
      reason: `every port tried (${attempts}) was taken before it could listen`
    })
  })

/**
 * Runs the real `effect-lb` command (the build in dist/) as a child process, stopped with the scope —
 * and, as a backstop, after every test and when this process exits: a test that fails or that vitest
 * times out (its scope's finalizers then may never run, e.g. while an acquire waits) leaves no
 * process behind.
 */
import { afterEach } from "@effect/vitest"
import { Effect } from "effect"
import * as ChildProcess from "node:child_process"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"

export const binary = Path.join(Path.dirname(fileURLToPath(import.meta.url)), "..", "..", "bin", "effect-lb.js")

export interface Running {
  readonly child: ChildProcess.ChildProcess
  readonly output: () => string
  readonly errors: () => string
  /** Waits until stdout matches `pattern` (or fails after `timeoutMs`). */
  readonly waitFor: (pattern: RegExp, timeoutMs?: number) => Effect.Effect<RegExpMatchArray, Error>
  /** Waits for the exit code. */
  readonly exited: Effect.Effect<number | null>
}

/** Every child started here and not yet exited. */
const children = new Set<ChildProcess.ChildProcess>()

const stop = (child: ChildProcess.ChildProcess) => {
  if (child.exitCode === null && child.signalCode === null) child.kill("SIGKILL")
}

const stopAll = () => children.forEach(stop)

// Runs after each test however it ended, timed out included; no test shares a process with the next.
afterEach(stopAll)
// The worker exiting (normally or by an uncaught error) takes its children with it.
process.once("exit", stopAll)

/** Starts `effect-lb args`; `env` adds to (or, with `undefined`, removes from) this process's environment. */
export const spawn = (args: ReadonlyArray<string>, env: Record<string, string | undefined> = {}) =>
  Effect.acquireRelease(
    Effect.sync((): Running => {
      const child = ChildProcess.spawn(process.execPath, [binary, ...args], {
        stdio: ["ignore", "pipe", "pipe"],
        env: Object.fromEntries(
          Object.entries({ ...process.env, ...env }).filter(
            (entry): entry is [string, string] => entry[1] !== undefined
          )
        )
      })
      children.add(child)
      child.once("exit", () => children.delete(child))
      let stdout = ""
      let stderr = ""
      child.stdout.on("data", (chunk: Buffer) => (stdout += chunk.toString()))
      child.stderr.on("data", (chunk: Buffer) => (stderr += chunk.toString()))
      const exited = Effect.async<number | null>((resume) => {
        if (child.exitCode !== null || child.signalCode !== null) return resume(Effect.succeed(child.exitCode))
        child.once("exit", (code) => resume(Effect.succeed(code)))
      })
      const waitFor = (pattern: RegExp, timeoutMs = 10_000) =>
        Effect.async<RegExpMatchArray, Error>((resume) => {
          const check = () => {
            const match = pattern.exec(stdout)
            if (match !== null) {
              cleanup()
              resume(Effect.succeed(match))
            }
          }
          const onExit = () => {
            cleanup()
            resume(Effect.fail(new Error(`exited before printing ${pattern}: ${stdout}${stderr}`)))
          }
          const timer = setTimeout(() => {
            cleanup()
            resume(Effect.fail(new Error(`no ${pattern} within ${timeoutMs} ms: ${stdout}${stderr}`)))
          }, timeoutMs)
          const cleanup = () => {
            clearTimeout(timer)
            child.stdout.off("data", check)
            child.off("exit", onExit)
          }
          child.stdout.on("data", check)
          child.once("exit", onExit)
          check()
          return Effect.sync(cleanup)
        })
      return { child, output: () => stdout, errors: () => stderr, waitFor, exited }
    }),
    ({ child }) => Effect.sync(() => stop(child))
  )

/** Runs an effect-lb command to its end: its exit code and what it printed on stdout and stderr. */
export const runToEnd = (args: ReadonlyArray<string>, env: Record<string, string | undefined> = {}) =>
  Effect.gen(function* () {
    const running = yield* spawn(args, env)
    const code = yield* running.exited
    return { code, errors: running.errors(), output: running.output() }
  }).pipe(Effect.scoped)

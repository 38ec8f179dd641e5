import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import { eventually } from "../support/eventually.js"
import { spawn } from "../support/process.js"

/** A TCP backend that answers each chunk with its name and the chunk: `A:ping`. */
const echoBackend = (name: string) =>
  Effect.acquireRelease(
    Effect.async<Net.Server>((resume) => {
      const server = Net.createServer((socket) => {
        socket.on("data", (chunk) => socket.write(`${name}:${chunk.toString()}`))
        socket.on("error", () => socket.destroy())
      })
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
    }),
    (server) => Effect.sync(() => server.close())
  ).pipe(
    Effect.map((server) => {
      const address = server.address()
      return typeof address === "object" && address !== null ? address.port : 0
    })
  )

/** One connection held open: `say` writes and waits for the answer (at most 2 s). */
const openConnection = (port: number) =>
  Effect.acquireRelease(
    Effect.async<Net.Socket, Error>((resume) => {
      const socket = Net.connect(port, "127.0.0.1", () => resume(Effect.succeed(socket)))
      socket.once("error", (error) => resume(Effect.fail(error)))
    }),
    (socket) => Effect.sync(() => socket.destroy())
  ).pipe(
    Effect.map((socket) => ({
      socket,
      say: (text: string) =>
        Effect.async<string, Error>((resume) => {
          const timer = setTimeout(() => resume(Effect.fail(new Error(`no answer to ${text}`))), 2000)
          socket.once("data", (chunk) => {
            clearTimeout(timer)
            resume(Effect.succeed(chunk.toString()))
          })
          socket.write(text)
        })
    }))
  )

interface Answer {
  readonly status: number
  readonly body: Record<string, unknown>
}

const api = (port: number, method: string, path: string, token?: string, body?: unknown) =>
  Effect.promise(async (): Promise<Answer> => {
    const response = await fetch(`http://127.0.0.1:${port}${path}`, {
      method,
      headers: {
        ...(token === undefined ? {} : { authorization: `Bearer ${token}` }),
        ...(body === undefined ? {} : { "content-type": "application/json" })
      },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      signal: AbortSignal.timeout(5000)
    })
    return { status: response.status, body: (await response.json()) as Record<string, unknown> }
  })

const serversOf = (adminPort: number) =>
  Effect.promise(async () => {
    const response = await fetch(`http://127.0.0.1:${adminPort}/api/servers`, { signal: AbortSignal.timeout(5000) })
    const servers = (await response.json()) as ReadonlyArray<{ id: string; weight: number; state: string }>
    return Object.fromEntries(servers.map((server) => [server.id, `${server.weight} ${server.state}`]))
  })

const settings = (servers: ReadonlyArray<string>, extra = "") =>
  [
    "port: 0",
    "strategy: round-robin",
    "health: { check: tcp, interval: 100ms, dead-after: 1s }",
    "proxy: { port: 0, drain-timeout: 0 }",
    "admin: { port: 0 }",
    "token: { env: RELOAD_TOKEN }",
    `servers: [${servers.join(", ")}]`,
    extra
  ].join("\n")

describe("effect-lb balancer --config, reloaded (the real process)", () => {
  it.scopedLive(
    "SIGHUP and POST /api/reload add, drain and re-weight servers with a connection open across; a bad file changes nothing",
    () =>
      Effect.gen(function* () {
        const [a, b, c] = yield* Effect.all([echoBackend("A"), echoBackend("B"), echoBackend("C")])
        const [idA, idB, idC] = [`127.0.0.1:${a}`, `127.0.0.1:${b}`, `127.0.0.1:${c}`] as const
        const dir = yield* Effect.acquireRelease(
          Effect.sync(() => Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-lb-reload-"))),
          (dir) => Effect.sync(() => Fs.rmSync(dir, { recursive: true, force: true }))
        )
        const file = Path.join(dir, "effect-lb.yaml")
        Fs.writeFileSync(file, settings([`${idA}:1`, `${idB}:1`]))
        const balancer = yield* spawn(["balancer", "--config", file], { RELOAD_TOKEN: "t0ken" })
        const proxyPort = Number((yield* balancer.waitFor(/proxy listening on 127\.0\.0\.1:(\d+)/))[1])
        const adminPort = Number((yield* balancer.waitFor(/admin and dashboard on http:\/\/127\.0\.0\.1:(\d+)/))[1])
        yield* eventually(serversOf(adminPort), (servers) => servers[idA] === "1 live" && servers[idB] === "1 live")
        // A server added through the admin API is not the file's: no reload removes it.
        expect((yield* api(adminPort, "POST", "/api/servers", "t0ken", { host: "127.0.0.1", port: c })).status).toBe(
          201
        )

        const held = yield* openConnection(proxyPort)
        const first = yield* held.say("one")
        expect(first).toMatch(/^[AB]:one$/)

        // SIGHUP: B leaves the file (drained), A is re-weighted, the strategy changes.
        Fs.writeFileSync(file, settings([`${idA}:5`]).replace("round-robin", "weighted-round-robin"))
        balancer.child.kill("SIGHUP")
        yield* balancer.waitFor(/configuration reloaded: 0 servers added, 1 draining, 1 re-weighted/)
        const afterHangup = yield* serversOf(adminPort)
        expect(afterHangup[idA]).toBe("5 live")
        expect(afterHangup[idC]).toBe("1 live")
        expect(afterHangup[idB] === undefined || afterHangup[idB] === "1 draining").toBe(true)
        expect((yield* api(adminPort, "GET", "/api/status")).body["strategy"]).toBe("weighted-round-robin")
        // The connection opened before the reload is still carried, to the same backend.
        expect(yield* held.say("two")).toBe(`${first.slice(0, 1)}:two`)

        // A bad file: refused with its one line, 400, and nothing changes.
        Fs.writeFileSync(file, settings([`${idB}:1`], "rise: 2"))
        expect(yield* api(adminPort, "POST", "/api/reload")).toMatchObject({ status: 401 })
        const refused = yield* api(adminPort, "POST", "/api/reload", "t0ken")
        expect(refused).toEqual({
          status: 400,
          body: {
            _tag: "ReloadFailed",
            message: `${file}: rise is not a known key (keys: host, port, strategy, servers, health, passive-health, slow-start, proxy, admin, tls, registry, idle-timeout, max-servers, remove-dead-after, access-log, token)`
          }
        })
        yield* balancer.waitFor(/reload refused, the running configuration stays/)
        expect(yield* serversOf(adminPort)).toEqual(afterHangup)

        // POST /api/reload: B is back, A's weight again; a new listening port takes a restart.
        Fs.writeFileSync(file, settings([`${idA}:2`, `${idB}:3`]).replace("port: 0", "port: 1"))
        const reloaded = yield* api(adminPort, "POST", "/api/reload", "t0ken")
        expect(reloaded).toEqual({
          status: 200,
          body: { added: [idB], removed: [], reweighted: [idA], strategy: "round-robin", restartNeeded: ["port"] }
        })
        yield* eventually(serversOf(adminPort), (servers) => servers[idB] === "3 live")
        expect((yield* serversOf(adminPort))[idC]).toBe("1 live")
        expect(yield* held.say("three")).toBe(`${first.slice(0, 1)}:three`)

        balancer.child.kill("SIGTERM")
        expect(yield* balancer.exited).toBe(0)
      }),
    30_000
  )
})

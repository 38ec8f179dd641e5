import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import { Status } from "../../src/domain/Protocol.js"
import { ask } from "../../src/services/client/BalancerClient.js"
import * as Wire from "../../src/services/wire/Wire.js"
import { eventually } from "../support/eventually.js"
import { runToEnd, spawn } from "../support/process.js"

const listening = /listening on 127\.0\.0\.1:(\d+)/
const admin = /admin and dashboard on http:\/\/127\.0\.0\.1:(\d+)\//

/** A balancer process with `token`, its balancer and admin ports. */
const balancerWith = (token: string) =>
  Effect.gen(function* () {
    const balancer = yield* spawn(["balancer", "--port", "0", "--admin-port", "0", "--token", token])
    const port = Number((yield* balancer.waitFor(listening))[1])
    const adminPort = Number((yield* balancer.waitFor(admin))[1])
    return { balancer, port, adminPort }
  })

/**
 * `POST /api/strategy` with an `Authorization` header of exactly these bytes (a browser's `fetch`
 * cannot send UTF-8 there, curl can): the status code that came back.
 */
const switchStrategy = (adminPort: number, authorization: Buffer | undefined) =>
  Effect.async<number>((resume) => {
    const body = JSON.stringify({ strategy: "weighted-round-robin" })
    const socket = Net.createConnection({ host: "127.0.0.1", port: adminPort })
    const head = [
      "POST /api/strategy HTTP/1.1",
      "Host: 127.0.0.1",
      "Content-Type: application/json",
      `Content-Length: ${body.length}`,
      "Connection: close"
    ].join("\r\n")
    const auth = authorization === undefined ? [] : [Buffer.from("\r\nAuthorization: "), authorization]
    socket.write(Buffer.concat([Buffer.from(head), ...auth, Buffer.from(`\r\n\r\n${body}`)]))
    let answer = ""
    socket.on("data", (chunk: Buffer) => (answer += chunk.toString("latin1")))
    socket.on("error", () => undefined)
    socket.on("close", () => resume(Effect.succeed(Number(/^HTTP\/1\.1 (\d+)/.exec(answer)?.[1] ?? 0))))
    return Effect.sync(() => socket.destroy())
  })

const bearer = (token: string, encoding: "utf8" | "latin1" = "utf8") => Buffer.from(`Bearer ${token}`, encoding)

const liveServers = (port: number) =>
  ask({ host: "127.0.0.1", port }, new Status()).pipe(
    Effect.map((reply) => (reply._tag === "StatusReport" ? reply.servers.filter((s) => s.state === "live") : [])),
    Effect.provide(Wire.layer)
  )

describe("one token rule for every door (real processes)", () => {
  it.scopedLive(
    "a token no door could take is refused at start-up, with one line and exit 1, by every command that takes one",
    () =>
      Effect.gen(function* () {
        const long = "x".repeat(2000)
        const [balancer, server, strategy, empty, spaced, control] = yield* Effect.all(
          [
            runToEnd(["balancer", "--port", "0", "--token", long]),
            runToEnd(["server", "--port", "0", "--balancer", "127.0.0.1:1", "--token", long]),
            runToEnd(["strategy", "round-robin", "--balancer", "127.0.0.1:1", "--token", long]),
            runToEnd(["balancer", "--port", "0", "--token", ""]),
            runToEnd(["balancer", "--port", "0", "--token", " padded"]),
            runToEnd(["balancer", "--port", "0", "--token", "tab\there"])
          ],
          { concurrency: "unbounded" }
        )
        const rule = "effect-lb: --token must be 1 to 1024 characters, no control characters, no space at either end"
        const tooLong = `${rule} (got 2000 characters)\n`
        for (const refused of [balancer, server, strategy]) {
          expect(refused.code).toBe(1)
          expect(refused.errors).toBe(tooLong)
          // Refused before anything started.
          expect(refused.output).not.toMatch(/listening/)
        }
        expect(empty).toMatchObject({ code: 1, errors: `${rule} (got an empty value)\n` })
        expect(spaced).toMatchObject({ code: 1, errors: `${rule} (got a space at one end)\n` })
        expect(control).toMatchObject({
          code: 1,
          errors: `${rule} (got a control character)\n`
        })
      }),
    60_000
  )

  it.scopedLive(
    "a token with spaces works at every door: the balancer port, a server, the strategy command and the admin API",
    () =>
      Effect.gen(function* () {
        const token = "correct horse battery staple"
        const { port, adminPort } = yield* balancerWith(token)
        const server = yield* spawn(["server", "--port", "0", "--balancer", `127.0.0.1:${port}`, "--token", token])
        yield* server.waitFor(listening)
        yield* eventually(liveServers(port), (servers) => servers.length === 1)
        const strategy = yield* runToEnd([
          "strategy",
          "round-robin",
          "--balancer",
          `127.0.0.1:${port}`,
          "--token",
          token
        ])
        expect(strategy).toMatchObject({ code: 0, output: "strategy set to round-robin\n" })

        expect(yield* switchStrategy(adminPort, bearer(token))).toBe(200)
        expect(yield* switchStrategy(adminPort, bearer(encodeURIComponent(token)))).toBe(200)
        expect(yield* switchStrategy(adminPort, bearer("correct"))).toBe(401)
        expect(yield* switchStrategy(adminPort, bearer("correct horse battery"))).toBe(401)
        expect(yield* switchStrategy(adminPort, undefined)).toBe(401)
      }),
    60_000
  )

  it.scopedLive(
    "a token beyond ASCII works at every door: as UTF-8 bytes, percent-encoded, or Latin-1 in the admin API",
    () =>
      Effect.gen(function* () {
        const token = "pässwört 密码 ✓"
        const { port, adminPort } = yield* balancerWith(token)
        const server = yield* spawn(["server", "--port", "0", "--balancer", `127.0.0.1:${port}`, "--token", token])
        yield* server.waitFor(listening)
        yield* eventually(liveServers(port), (servers) => servers.length === 1)
        const strategy = yield* runToEnd([
          "strategy",
          "round-robin",
          "--balancer",
          `127.0.0.1:${port}`,
          "--token",
          token
        ])
        expect(strategy.code).toBe(0)

        expect(yield* switchStrategy(adminPort, bearer(token))).toBe(200)
        expect(yield* switchStrategy(adminPort, bearer(encodeURIComponent(token)))).toBe(200)
        expect(yield* switchStrategy(adminPort, bearer("pässwört 密码 x"))).toBe(401)
        // What a browser's fetch sends for a Latin-1 token: one byte a character.
        const latin1 = yield* balancerWith("pässwört")
        expect(yield* switchStrategy(latin1.adminPort, bearer("pässwört", "latin1"))).toBe(200)
        expect(yield* switchStrategy(latin1.adminPort, bearer("pässwört", "utf8"))).toBe(200)
        expect(yield* switchStrategy(latin1.adminPort, bearer("passwort", "utf8"))).toBe(401)
      }),
    60_000
  )

  it.scopedLive(
    "a server whose registration is refused says so and exits 1, rather than serve outside the rotation",
    () =>
      Effect.gen(function* () {
        const { port } = yield* balancerWith("the right one")
        const refused = yield* runToEnd([
          "server",
          "--port",
          "0",
          "--balancer",
          `127.0.0.1:${port}`,
          "--token",
          "wrong"
        ])
        expect(refused.code).toBe(1)
        expect(refused.output).toMatch(listening)
        expect(refused.errors).toBe(
          `effect-lb: the balancer at 127.0.0.1:${port} refused the token: Unauthorized: Register needs the balancer's token\n`
        )
      }),
    60_000
  )
})

describe("a server with 10,000 files (real processes)", () => {
  it.scopedLive(
    "effect-lb client list shows all 10,000",
    () =>
      Effect.gen(function* () {
        const folder = yield* Effect.acquireRelease(
          Effect.sync(() => {
            const root = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-lb-10k-"))
            for (let i = 0; i < 10_000; i++) Fs.writeFileSync(Path.join(root, `f${i}`), "")
            return root
          }),
          (root) => Effect.sync(() => Fs.rmSync(root, { recursive: true, force: true }))
        )
        const balancer = yield* spawn(["balancer", "--port", "0"])
        const port = Number((yield* balancer.waitFor(listening))[1])
        const server = yield* spawn(["server", "--port", "0", "--files", folder, "--balancer", `127.0.0.1:${port}`])
        yield* server.waitFor(listening)
        yield* eventually(liveServers(port), (servers) => servers.length === 1)
        const list = yield* runToEnd(["client", "--balancer", `127.0.0.1:${port}`, "list"])
        expect(list.code).toBe(0)
        expect(list.errors).toBe("")
        const lines = list.output.trimEnd().split("\n")
        expect(lines.filter((line) => /^f\d+\t-\t0 B$/.test(line)).length).toBe(10_000)
        expect(lines.at(-1)).toMatch(/^\(10000 files, from \S+ \(127\.0\.0\.1:\d+\)\)$/)
      }),
    60_000
  )
})

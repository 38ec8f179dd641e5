/**
 * Hostile input: every port of the real processes fed 10,000 random and mutated frames. Each gets
 * a typed error (or, if the mutation happens to be a valid request, its answer); the process stays
 * up, keeps serving, and its memory stays bounded.
 */
import { describe, expect, it } from "@effect/vitest"
import { Arbitrary, Effect, FastCheck, Schema } from "effect"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import { BalancerRequest, NewServer, ServerRequest, StrategyChange, WeightChange } from "../../src/domain/Protocol.js"
import { raw } from "../support/net.js"
import { spawn } from "../support/process.js"
import { parse } from "../support/prometheus.js"
import { rssMb } from "../support/rss.js"

const listening = /listening on 127\.0\.0\.1:(\d+)/

/** Mutations of a valid message: a field removed, a wrong type, a huge number, deep nesting, junk. */
const mutated = <A, I>(schema: Schema.Schema<A, I>) =>
  FastCheck.tuple(
    Arbitrary.make(schema),
    FastCheck.integer({ min: 0, max: 7 }),
    FastCheck.jsonValue({ maxDepth: 3 }),
    FastCheck.nat(8000)
  ).map(([message, how, junk, depth]) => {
    const json = Schema.encodeSync(schema)(message) as Record<string, unknown>
    const keys = Object.keys(json).filter((k) => k !== "_tag")
    const key = keys[depth % Math.max(keys.length, 1)] ?? "extra"
    switch (how) {
      case 0:
        delete json[key]
        break
      case 1:
        json[key] = junk
        break
      case 2:
        json[key] = 1e308 * (depth % 2 === 0 ? 1 : -1)
        break
      case 3:
        // Deep nesting, written as text: building it as a value would overflow our own stack.
        return Buffer.from(
          JSON.stringify(json).replace(/}$/, `,${JSON.stringify(key)}:${"[".repeat(depth)}${"]".repeat(depth)}}`)
        )
      case 4:
        json._tag = String(junk)
        break
      case 5:
        return Buffer.from(JSON.stringify(json).slice(0, depth % 40))
      case 6:
        return Buffer.concat([Buffer.from(JSON.stringify(json).slice(0, 10)), Buffer.from([0xff, 0xc3, 0x28])])
    }
    return Buffer.from(JSON.stringify(json))
  })

export const framesFor = <A, I>(schema: Schema.Schema<A, I>, count: number, seed: number): Array<Buffer> =>
  FastCheck.sample(
    FastCheck.oneof(
      mutated(schema),
      FastCheck.jsonValue({ maxDepth: 4 }).map((value) => Buffer.from(JSON.stringify(value) ?? "null")),
      FastCheck.string({ maxLength: 200 }).map((text) => Buffer.from(text)),
      FastCheck.uint8Array({ maxLength: 300 }).map((bytes) => Buffer.from(bytes))
    ),
    { numRuns: count, seed }
  ).map((frame) => Buffer.from(frame.map((byte) => (byte === 0x0a ? 0x20 : byte))))

/** Sends frames over `connections` connections at once; returns every reply line. */
const blast = (port: number, all: ReadonlyArray<Buffer>, connections: number) =>
  Effect.forEach(
    Array.from({ length: connections }, (_, c) => all.filter((_, i) => i % connections === c)),
    (mine) =>
      raw(port, Buffer.concat(mine.flatMap((frame) => [frame, Buffer.from("\n")])), {
        expectLines: mine.length,
        waitMs: 20_000
      }).pipe(Effect.map(({ data }) => data.split("\n").filter((line) => line.length > 0))),
    { concurrency: "unbounded" }
  ).pipe(Effect.map((replies) => replies.flat()))

const tagsOf = (lines: ReadonlyArray<string>) =>
  new Set(lines.map((line) => (JSON.parse(line) as { _tag: string })._tag))

/** A connection that sends part of a line and hangs up; another that sends a line past the limit. */
const rude = (port: number) =>
  Effect.gen(function* () {
    yield* Effect.async<void>((resume) => {
      const socket = Net.createConnection({ host: "127.0.0.1", port }, () => {
        socket.end('{"_tag":"Pi')
        resume(Effect.void)
      })
      socket.on("error", () => resume(Effect.void))
    })
    return yield* raw(port, Buffer.alloc(200 * 1024, 0x7b))
  })

describe("hostile input against the real processes", () => {
  it.scopedLive(
    "the server answers 10,000 random and mutated frames with typed errors, stays up, and stays small",
    () =>
      Effect.gen(function* () {
        const folder = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-lb-fuzz-"))
        yield* Effect.addFinalizer(() => Effect.sync(() => Fs.rmSync(folder, { recursive: true, force: true })))
        // max-compute 0: a mutation that happens to be a valid Compute must not sleep the test away.
        const server = yield* spawn(["server", "--port", "0", "--files", folder, "--max-compute", "0"])
        const port = Number((yield* server.waitFor(listening))[1])
        const before = rssMb(server.child.pid)
        const all = framesFor(ServerRequest, 10_000, 42)
        const replies = yield* blast(port, all, 10)
        expect(replies).toHaveLength(all.length)
        for (const tag of tagsOf(replies)) {
          expect(["InvalidRequest", "FileNotFound", "FileList", "Pong", "Computed"]).toContain(tag)
        }
        const rudeReply = yield* rude(port)
        expect(rudeReply.closedByServer).toBe(true)
        expect(rudeReply.data).toContain("InvalidRequest")
        const { data } = yield* raw(port, '{"_tag":"Ping"}\n', { expectLines: 1 })
        expect(data).toContain("Pong")
        expect(server.child.exitCode).toBeNull()
        expect(rssMb(server.child.pid) - before).toBeLessThan(100)
      }),
    60_000
  )

  it.scopedLive(
    "the admin API answers 2,000 random and mutated HTTP requests with JSON 4xx (never a 5xx), and stays up",
    () =>
      Effect.gen(function* () {
        const balancer = yield* spawn([
          "balancer",
          "--port",
          "0",
          "--admin-port",
          "0",
          "--token",
          "t",
          "--probe-interval",
          "1h",
          "--server",
          "127.0.0.1:9"
        ])
        const base = (yield* balancer.waitFor(/dashboard on (http:\/\/127\.0\.0\.1:\d+)\//))[1] ?? ""
        const before = rssMb(balancer.child.pid)
        const count = 2_000
        const bodies = [
          ...framesFor(StrategyChange, count / 2, 11),
          ...framesFor(NewServer, count / 4, 12),
          ...framesFor(WeightChange, count / 4, 14)
        ]
        // Mostly the routes as they are meant to be called (so bodies reach validation), and some not.
        const route = FastCheck.oneof(
          { weight: 6, arbitrary: FastCheck.constant(["POST", "/api/strategy"] as const) },
          { weight: 6, arbitrary: FastCheck.constant(["POST", "/api/servers"] as const) },
          { weight: 3, arbitrary: FastCheck.constant(["PATCH", "/api/servers/127.0.0.1:9"] as const) },
          {
            weight: 2,
            arbitrary: FastCheck.tuple(
              FastCheck.constant("DELETE"),
              FastCheck.constantFrom(
                "/api/servers/127.0.0.1:9?now=true",
                "/api/servers/..%2F..%2Fetc",
                "/api/servers/%00",
                "/api/servers/%E0%A4%A"
              )
            )
          },
          {
            weight: 1,
            arbitrary: FastCheck.tuple(
              FastCheck.constantFrom("GET", "PUT", "PATCH", "DELETE"),
              FastCheck.constantFrom(
                "/api/status",
                "/api/servers",
                "/metrics",
                "/readyz",
                "/api/strategy",
                `/${"x".repeat(5000)}`,
                "/api/../api/status"
              )
            )
          }
        )
        const requests = FastCheck.sample(
          FastCheck.tuple(
            route,
            FastCheck.constantFrom(undefined, "Bearer t", "Bearer t", "Bearer wrong", "Basic dDp0", "Bearer"),
            FastCheck.nat(bodies.length - 1)
          ),
          { numRuns: count, seed: 13 }
        )
        const replies = yield* Effect.forEach(
          requests,
          ([[method, path], authorization, body]) =>
            Effect.promise(async () => {
              const response = await fetch(`${base}${path}`, {
                method,
                headers: authorization === undefined ? {} : { authorization },
                ...(method === "GET" ? {} : { body: bodies[body] })
              })
              const text = await response.text()
              const json = response.headers.get("content-type")?.includes("json") === true
              if (json) JSON.parse(text)
              return { status: response.status, json }
            }),
          { concurrency: 20 }
        )
        const statuses = new Set(replies.map((reply) => reply.status))
        // Every kind of answer was reached (so bodies got through to validation), and never a 5xx.
        for (const reached of [200, 201, 400, 401, 404]) expect(statuses).toContain(reached)
        for (const status of statuses) expect([200, 201, 202, 400, 401, 404, 409, 503]).toContain(status)
        for (const { status, json } of replies) if (status >= 400) expect(json).toBe(true)
        // Still up, still answering, its scrape still well-formed.
        const status = yield* Effect.promise(() => fetch(`${base}/api/status`).then((r) => r.status))
        expect(status).toBe(200)
        const metrics = yield* Effect.promise(() => fetch(`${base}/metrics`).then((r) => r.text()))
        expect(() => parse(metrics)).not.toThrow()
        expect(balancer.child.exitCode).toBeNull()
        expect(rssMb(balancer.child.pid) - before).toBeLessThan(100)
      }),
    60_000
  )

  it.scopedLive(
    "the balancer answers 10,000 random and mutated frames with typed errors, stays up, and stays small",
    () =>
      Effect.gen(function* () {
        const balancer = yield* spawn(["balancer", "--port", "0", "--token", "t", "--probe-interval", "1h"])
        const port = Number((yield* balancer.waitFor(listening))[1])
        const before = rssMb(balancer.child.pid)
        const all = framesFor(BalancerRequest, 10_000, 7)
        const replies = yield* blast(port, all, 10)
        expect(replies).toHaveLength(
          // Load from a connection that never registered is refused; a valid Load on a registered one is not answered.
          all.length
        )
        for (const tag of tagsOf(replies)) {
          expect(["InvalidRequest", "Unauthorized", "NoServerAvailable", "StatusReport", "Located"]).toContain(tag)
        }
        const rudeReply = yield* rude(port)
        expect(rudeReply.closedByServer).toBe(true)
        expect(rudeReply.data).toContain("InvalidRequest")
        const { data } = yield* raw(port, '{"_tag":"Status"}\n', { expectLines: 1 })
        expect(data).toContain("StatusReport")
        expect(balancer.child.exitCode).toBeNull()
        expect(rssMb(balancer.child.pid) - before).toBeLessThan(100)
      }),
    60_000
  )
})

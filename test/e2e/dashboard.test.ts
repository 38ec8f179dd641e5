/**
 * The dashboard in a real headless browser (Debian's chromium driven by playwright-core) against a
 * real balancer process and real server processes. `.ci/run` installs chromium; where it is missing
 * and cannot be installed, this file says so and skips.
 */
import { describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Fs from "node:fs"
import * as Net from "node:net"
import { type Browser, chromium, type Page } from "playwright-core"
import { Locate } from "../../src/domain/Protocol.js"
import { ask } from "../../src/services/client/BalancerClient.js"
import * as Wire from "../../src/services/wire/Wire.js"
import { Redis } from "ioredis"
import { balancer as clusterMember } from "../support/cluster.js"
import { eventually } from "../support/eventually.js"
import { spawn } from "../support/process.js"
import { haveRedis, redisSkipReason, startRedis } from "../support/redis.js"

const executablePath = process.env["CHROMIUM_PATH"] ?? "/usr/bin/chromium"
const haveChromium = Fs.existsSync(executablePath)
if (!haveChromium) {
  console.warn(
    `dashboard browser test skipped: no chromium at ${executablePath} (apt-get install chromium, or set CHROMIUM_PATH)`
  )
}

const listening = /listening on 127\.0\.0\.1:(\d+)/
const dashboardAt = /admin and dashboard on (http:\/\/127\.0\.0\.1:\d+\/)/

const browser = Effect.acquireRelease(
  Effect.promise((): Promise<Browser> =>
    chromium.launch({
      executablePath,
      headless: true,
      args: ["--no-sandbox", "--headless", "--disable-gpu", "--disable-dev-shm-usage"]
    })
  ),
  (browser) => Effect.promise(() => browser.close())
)

const on = <A>(page: Page, run: (page: Page) => Promise<A>) => Effect.promise(() => run(page))

/** One effect-lb Ping through the proxy to whichever server it picks; waits for the answer and the close. */
const proxied = (port: number) =>
  Effect.async<void>((resume) => {
    const socket = Net.createConnection({ host: "127.0.0.1", port }, () => socket.write('{"_tag":"Ping"}\n'))
    socket.once("data", () => socket.end())
    socket.on("error", () => undefined)
    socket.on("close", () => resume(Effect.void))
  })

if (haveChromium && !haveRedis) console.warn(redisSkipReason)

describe.skipIf(!haveChromium)("the dashboard in a headless browser", () => {
  it.scopedLive(
    "shows the servers live, turns a killed one dead within 7 s without a reload, and switches the strategy",
    () =>
      Effect.gen(function* () {
        const balancer = yield* spawn(["balancer", "--port", "0", "--admin-port", "0", "--proxy-port", "0"])
        const port = Number((yield* balancer.waitFor(/balancer listening on 127\.0\.0\.1:(\d+)/))[1])
        const proxyPort = Number((yield* balancer.waitFor(/proxy listening on 127\.0\.0\.1:(\d+)/))[1])
        const url = (yield* balancer.waitFor(dashboardAt))[1] ?? ""
        const address = `127.0.0.1:${port}`
        const servers = yield* Effect.forEach(["alpha", "beta", "gamma"], (id) =>
          spawn(["server", "--port", "0", "--id", id, "--balancer", address])
        )
        yield* Effect.forEach(servers, (server) => server.waitFor(listening))
        // Picks before the page is open, and a few seconds of them: the chart starts with them.
        const located = Effect.promise(() =>
          fetch(`${url}api/status`).then((r) => r.json() as Promise<{ servers: Array<{ state: string }> }>)
        )
        yield* eventually(located, (s) => s.servers.filter((server) => server.state === "live").length === 3)
        yield* Effect.forEach(
          Array.from({ length: 12 }, (_, i) => i),
          (i) => ask({ host: "127.0.0.1", port }, new Locate({ key: `before-${i}` })),
          { discard: true }
        )
        const history = Effect.promise(() =>
          fetch(`${url}api/history`).then((r) => r.json() as Promise<{ samples: Array<unknown> }>)
        )
        yield* eventually(history, (h) => h.samples.length >= 3, "6 seconds")

        const page = yield* Effect.flatMap(browser, (b) => Effect.promise(() => b.newPage()))
        const errors: Array<string> = []
        page.on("pageerror", (error) => errors.push(error.message))
        yield* on(page, (p) => p.goto(url))
        // The first drawing of the chart already has the balancer's history (no event stream could have filled it yet).
        yield* on(page, (p) => p.waitForFunction(`document.getElementById("chart").dataset.samples !== undefined`))
        expect(Number(yield* on(page, (p) => p.locator("#chart").getAttribute("data-samples")))).toBeGreaterThanOrEqual(
          3
        )
        yield* on(page, (p) => p.locator("#legend").filter({ hasText: "alpha" }).waitFor({ timeout: 3000 }))
        // Every server appears as a live row, pushed by the event stream.
        for (const id of ["alpha", "beta", "gamma"]) {
          yield* on(page, (p) =>
            p.locator(`tr[data-server="${id}"] td.state`).filter({ hasText: "live" }).waitFor({ timeout: 5000 })
          )
        }
        expect(yield* on(page, (p) => p.locator("#connection").textContent())).toBe("live")
        // What runs, and where.
        expect(yield* on(page, (p) => p.locator("#version").textContent())).toMatch(/^\d+\.\d+\.\d+/)
        expect(yield* on(page, (p) => p.locator("#uptime").textContent())).toMatch(/^\d+ s$/)
        expect(yield* on(page, (p) => p.locator("#listen-balancer").textContent())).toBe(`127.0.0.1:${port}`)
        expect(yield* on(page, (p) => p.locator("#listen-proxy").textContent())).toBe(`127.0.0.1:${proxyPort}`)
        expect(yield* on(page, (p) => p.locator("#listen-admin").textContent())).toBe(url.slice(7, -1))
        // Without --registry there is no cluster to show.
        expect(yield* on(page, (p) => p.locator("#cluster-panel").isVisible())).toBe(false)
        // Rows in id order; each with its time in state, last check and counts.
        expect(
          yield* on(page, (p) =>
            p.locator("tr[data-server]").evaluateAll((rows) => rows.map((row) => row.getAttribute("data-server")))
          )
        ).toEqual(["alpha", "beta", "gamma"])
        expect(yield* on(page, (p) => p.locator(`tr[data-server="alpha"] td.since`).textContent())).toMatch(
          /^for \d+ s$/
        )
        expect(yield* on(page, (p) => p.locator(`tr[data-server="alpha"] td.check`).textContent())).toMatch(
          /^ping [\d.]+ ms ok, \d+ s ago$/
        )
        expect(yield* on(page, (p) => p.locator(`tr[data-server="alpha"] td.failures`).textContent())).toBe("0 / 0")
        expect(yield* on(page, (p) => p.locator(`tr[data-server="alpha"] td.reroutes`).textContent())).toBe("0")
        expect(yield* on(page, (p) => p.locator(`tr[data-server="alpha"] td.ejections`).textContent())).toBe("0")
        // The proxy's figures: a connection through it shows.
        expect(yield* on(page, (p) => p.locator("#proxy-panel").isVisible())).toBe(true)
        yield* proxied(proxyPort)
        yield* on(page, (p) =>
          p.waitForFunction(
            `Number(document.getElementById("proxy-accepted").textContent) >= 1 &&
             document.getElementById("proxy-in").textContent !== "0 B"`,
            undefined,
            { timeout: 3000 }
          )
        )
        expect(yield* on(page, (p) => p.locator("#proxy-away").textContent())).toBe("0")

        // Clients spread: picks show on the page as they happen.
        yield* Effect.forEach(
          Array.from({ length: 30 }, () => undefined),
          () => ask({ host: "127.0.0.1", port }, new Locate({})),
          { discard: true }
        )
        yield* on(page, (p) =>
          // A string, evaluated in the page: this project's TypeScript has no DOM types.
          p.waitForFunction(
            `[...document.querySelectorAll("tr[data-server] td.located")]
               .reduce((sum, cell) => sum + Number(cell.textContent), 0) >= 30`,
            undefined,
            { timeout: 5000 }
          )
        )

        // SIGKILL one: no goodbye; the page turns it dead (5 s dead-after) with no reload.
        const url0 = page.url()
        const killedAt = Date.now()
        servers[1]?.child.kill("SIGKILL")
        yield* on(page, (p) =>
          p.locator(`tr[data-server="beta"] td.state`).filter({ hasText: "dead" }).waitFor({ timeout: 7000 })
        )
        expect(Date.now() - killedAt).toBeLessThan(7000)
        // Its last figures are history: the row says when it last answered, and no active count.
        expect(yield* on(page, (p) => p.locator(`tr[data-server="beta"] td.state`).textContent())).toMatch(
          /^dead last seen \d+ s ago$/
        )
        expect(yield* on(page, (p) => p.locator(`tr[data-server="beta"] td.active`).textContent())).toBe("–")
        // Dead since the probe failed; why it failed; counted as an ejection and failed checks.
        expect(yield* on(page, (p) => p.locator(`tr[data-server="beta"] td.check`).textContent())).toMatch(
          /^(refused|timeout|reset), \d+ s ago$/
        )
        expect(yield* on(page, (p) => p.locator(`tr[data-server="beta"] td.ejections`).textContent())).toBe("1")
        expect(yield* on(page, (p) => p.locator(`tr[data-server="beta"] td.failures`).textContent())).toMatch(
          /^[1-9]\d* \/ 0$/
        )
        expect(yield* on(page, (p) => p.locator(`tr[data-server="beta"] td.since`).textContent())).toMatch(/^for \d s$/)
        expect(page.url()).toBe(url0)
        expect(yield* on(page, (p) => p.locator(`tr[data-server="alpha"] td.state`).textContent())).toBe("live")

        // The strategy switch: chosen on the page, applied by the balancer, shown on the page.
        yield* on(page, (p) => p.selectOption("#strategy", "weighted-least-connection"))
        yield* on(page, (p) => p.click("#apply-strategy"))
        yield* on(page, (p) =>
          p.locator("#current-strategy").filter({ hasText: "weighted-least-connection" }).waitFor({ timeout: 3000 })
        )
        const status = yield* on(page, (p) => p.evaluate(() => fetch("/api/status").then((r) => r.json())))
        expect(status).toMatchObject({ strategy: "weighted-least-connection" })

        // A weight typed into a row is the server's weight at once.
        yield* on(page, (p) => p.fill(`tr[data-server="alpha"] .weight-input`, "5"))
        yield* on(page, (p) => p.press(`tr[data-server="alpha"] .weight-input`, "Enter"))
        const alpha = Effect.promise(() =>
          fetch(`${url}api/servers/alpha`).then((r) => r.json() as Promise<{ weight: number }>)
        )
        expect((yield* eventually(alpha, (server) => server.weight === 5, "3 seconds")).weight).toBe(5)

        // Remove takes a server out at once; its row goes.
        yield* on(page, (p) => p.click(`tr[data-server="gamma"] button.remove`))
        yield* on(page, (p) => p.locator(`tr[data-server="gamma"]`).waitFor({ state: "detached", timeout: 3000 }))
        expect(errors).toEqual([])
      }).pipe(Effect.provide(Wire.layer)),
    40_000
  )

  it.scopedLive(
    "with a token: shows everything, refuses a change until the token is given on the page",
    () =>
      Effect.gen(function* () {
        const balancer = yield* spawn([
          "balancer",
          "--port",
          "0",
          "--admin-port",
          "0",
          "--token",
          "open-sesame",
          "--health",
          "tcp",
          "--server",
          "127.0.0.1:9"
        ])
        const url = (yield* balancer.waitFor(dashboardAt))[1] ?? ""
        const page = yield* Effect.flatMap(browser, (b) => Effect.promise(() => b.newPage()))
        yield* on(page, (p) => p.goto(url))
        yield* on(page, (p) => p.locator(`tr[data-server="127.0.0.1:9"]`).waitFor({ timeout: 5000 }))
        yield* on(page, (p) => p.selectOption("#strategy", "weighted-round-robin"))
        yield* on(page, (p) => p.click("#apply-strategy"))
        yield* on(page, (p) => p.locator("#token").waitFor({ state: "visible", timeout: 3000 }))
        expect(yield* on(page, (p) => p.locator("#message").textContent())).toMatch(/needs its token/)
        expect(yield* on(page, (p) => p.locator("#current-strategy").textContent())).toBe("round-robin")
        yield* on(page, (p) => p.fill("#token", "open-sesame"))
        yield* on(page, (p) => p.click("#token-box button"))
        yield* on(page, (p) => p.click("#apply-strategy"))
        yield* on(page, (p) =>
          p.locator("#current-strategy").filter({ hasText: "weighted-round-robin" }).waitFor({ timeout: 3000 })
        )
      }),
    20_000
  )
})

/** An announcement written straight into Redis, as a buggy or hostile balancer could: its id is markup. */
const hostileId = `<img src=x onerror="window.pwned=1">`
const announceHostile = (url: string, namespace: string) =>
  Effect.acquireUseRelease(
    Effect.sync(() => new Redis(url, { lazyConnect: false, maxRetriesPerRequest: 1, connectTimeout: 2000 })),
    (redis) =>
      Effect.promise(async () => {
        const now = Date.now()
        const record = {
          id: hostileId,
          instance: "x",
          addresses: {},
          version: "<b>9</b>",
          startedAt: now,
          lastSeenAt: now
        }
        await redis.set(`${namespace}:balancer:${hostileId}`, JSON.stringify(record), "PX", 60_000)
        await redis.sadd(`${namespace}:balancers`, hostileId)
      }),
    (redis) => Effect.promise(() => redis.quit().catch(() => undefined))
  )

describe.skipIf(!haveChromium || !haveRedis)("the dashboard's Cluster panel (real Redis, two balancers)", () => {
  it.scopedLive(
    "lists both balancers, this one marked, says the registry is connected, and shows another's markup as text",
    () =>
      Effect.gen(function* () {
        const redis = yield* startRedis()
        const [one, two] = yield* Effect.all(
          [
            clusterMember(redis.url, "dash", ["--balancer-id", "one"]),
            clusterMember(redis.url, "dash", ["--balancer-id", "two"])
          ],
          { concurrency: "unbounded" }
        )
        yield* announceHostile(redis.url, "dash")
        const page = yield* Effect.flatMap(browser, (b) => Effect.promise(() => b.newPage()))
        const errors: Array<string> = []
        page.on("pageerror", (error) => errors.push(error.message))
        yield* on(page, (p) => p.goto(`http://127.0.0.1:${one.admin}/`))
        yield* on(page, (p) => p.locator("#cluster-panel").waitFor({ state: "visible", timeout: 5000 }))
        for (const id of ["one", "two"]) {
          yield* on(page, (p) => p.locator(`tr[data-balancer="${id}"]`).waitFor({ timeout: 5000 }))
        }
        yield* on(page, (p) =>
          p
            .locator("#registry-state")
            .filter({ hasText: /^connected$/ })
            .waitFor({ timeout: 5000 })
        )
        expect(yield* on(page, (p) => p.locator("#registry-state").getAttribute("class"))).toBe("pill on")
        expect(yield* on(page, (p) => p.locator("#registry-facts").textContent())).toMatch(
          new RegExp(`^${redis.url.replace(/\/$/, "").replace(/[./]/g, "\\$&")} · namespace dash · revision \\d+`)
        )
        expect(yield* on(page, (p) => p.locator(`tr[data-balancer="one"] td.balancer-id`).textContent())).toBe(
          "onethis one"
        )
        expect(yield* on(page, (p) => p.locator(`tr[data-balancer="two"] td.balancer-id`).textContent())).toBe("two")
        expect(yield* on(page, (p) => p.locator(`tr[data-balancer="two"] td.addresses`).textContent())).toBe(
          `balancer 127.0.0.1:${two.port}, admin 127.0.0.1:${two.admin}`
        )
        expect(yield* on(page, (p) => p.locator(`tr[data-balancer="two"] td.seen`).textContent())).toMatch(
          /^\d+ s ago$/
        )
        // The hostile entry is a row of plain text: no element made from it, no script run.
        const hostile = page.locator("tr[data-balancer]").filter({ hasText: hostileId })
        yield* on(page, () => hostile.waitFor({ timeout: 5000 }))
        expect(yield* on(page, () => hostile.locator("td.version").textContent())).toBe("<b>9</b>")
        expect(yield* on(page, (p) => p.locator("#cluster-panel img, #cluster-panel b").count())).toBe(0)
        expect(yield* on(page, (p) => p.evaluate("window.pwned"))).toBeUndefined()
        expect(errors).toEqual([])
      }),
    30_000
  )
})

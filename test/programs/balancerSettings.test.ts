import { describe, expect, it } from "@effect/vitest"
import { Duration, Either, Option } from "effect"
import { type BalancerFlags, desiredFrom, settingsFrom } from "../../src/programs/balancerSettings.js"
import { type ConfigFile, decodeConfig, parseConfig } from "../../src/programs/configFile.js"

/** No flag given: every setting is the file's, else the default. */
const noFlags: BalancerFlags = {
  host: Option.none(),
  port: Option.none(),
  strategy: Option.none(),
  servers: [],
  probeInterval: Option.none(),
  deadAfter: Option.none(),
  rise: Option.none(),
  fall: Option.none(),
  health: Option.none(),
  proxyPort: Option.none(),
  maxConnections: Option.none(),
  connectTimeout: Option.none(),
  proxyIdleTimeout: Option.none(),
  drainTimeout: Option.none(),
  sendProxy: Option.none(),
  acceptProxy: false,
  adminPort: Option.none(),
  adminHost: Option.none(),
  idleTimeout: Option.none(),
  maxServers: Option.none(),
  removeDeadAfter: Option.none(),
  slowStart: Option.none(),
  ejectAfter: Option.none(),
  ejectTime: Option.none(),
  maxEjectedPercent: Option.none(),
  accessLog: false,
  token: Option.none(),
  tlsCert: Option.none(),
  tlsKey: Option.none(),
  tlsListeners: Option.none(),
  backendTls: false,
  backendCa: Option.none(),
  registry: Option.none(),
  registryNamespace: Option.none(),
  balancerId: Option.none()
}

const file = (yaml: string): ConfigFile =>
  Either.getOrThrow(Either.flatMap(parseConfig("f.yaml", yaml), (value) => decodeConfig("f.yaml", value, {})))

const tuned = [
  "proxy: { port: 0, send-proxy: v1, accept-proxy: true }",
  "slow-start: 20s",
  "passive-health: { eject-after: 4, eject-time: 5s, max-ejected-percent: 30 }"
].join("\n")

describe("the balancer's settings: flag, else file, else default", () => {
  it("takes slow start, passive health and the PROXY protocol from the file", () => {
    const settings = settingsFrom(noFlags, file(tuned))
    expect(settings.slowStart).toEqual(Duration.seconds(20))
    expect([settings.ejectAfter, settings.ejectTime, settings.maxEjectedPercent]).toEqual([4, Duration.seconds(5), 30])
    expect(settings.proxy).toMatchObject({ sendProxy: "v1", acceptProxy: true })
  })

  it("a flag given wins over the file; none given, the defaults (all off)", () => {
    const flags: BalancerFlags = {
      ...noFlags,
      slowStart: Option.some(Duration.zero),
      ejectAfter: Option.some(0),
      sendProxy: Option.some("off")
    }
    const settings = settingsFrom(flags, file(tuned))
    expect(settings.slowStart).toEqual(Duration.zero)
    expect(settings.ejectAfter).toBe(0)
    expect(settings.ejectTime).toEqual(Duration.seconds(5))
    expect(settings.proxy?.sendProxy).toBeUndefined()
    const defaults = settingsFrom(noFlags, file("proxy: { port: 0 }"))
    expect([defaults.slowStart, defaults.ejectAfter, defaults.ejectTime, defaults.maxEjectedPercent]).toEqual([
      Duration.zero,
      0,
      Duration.seconds(30),
      50
    ])
    expect(defaults.proxy?.sendProxy).toBeUndefined()
    expect(defaults.proxy?.acceptProxy).toBe(false)
  })

  it("a reload applies them in place: none of them needs a restart", () => {
    const running = settingsFrom(noFlags, file("proxy: { port: 0 }"))
    const desired = desiredFrom(settingsFrom(noFlags, file(tuned)), running, true)
    expect(desired.tunables).toEqual({ slowStartMs: 20_000, ejectAfter: 4, ejectTimeMs: 5000, maxEjectedPercent: 30 })
    expect(desired.proxyProtocol).toEqual({ sendProxy: "v1", acceptProxy: true })
    expect(desired.restartNeeded).toEqual([])
    const back = desiredFrom(running, settingsFrom(noFlags, file(tuned)), true)
    expect(back.proxyProtocol).toEqual({ acceptProxy: false })
    expect(back.tunables.slowStartMs).toBe(0)
  })
})

describe("the shared registry's settings", () => {
  const shared = "registry: { url: redis://10.0.0.9:6380/2, namespace: blue, balancer-id: lb1 }"

  it("come from the file's registry section, and a flag wins over it; none given, no shared registry", () => {
    expect(settingsFrom(noFlags, file(shared)).registry).toEqual({
      target: { host: "10.0.0.9", port: 6380, db: 2, tls: false },
      namespace: "blue",
      balancerId: "lb1"
    })
    const flags: BalancerFlags = { ...noFlags, registryNamespace: Option.some("green"), balancerId: Option.some("lb2") }
    expect(settingsFrom(flags, file(shared)).registry).toMatchObject({ namespace: "green", balancerId: "lb2" })
    expect(settingsFrom(noFlags, file("registry: { url: redis://cache }")).registry).toEqual({
      target: { host: "cache", port: 6379, db: 0, tls: false },
      namespace: "effect-lb",
      balancerId: undefined
    })
    expect(settingsFrom(noFlags, file("port: 4000")).registry).toBeUndefined()
  })

  it("a file with a password in its URL is refused in one line that does not show it", () => {
    const refused = Either.flatMap(parseConfig("f.yaml", "registry: { url: 'redis://:s3cret@cache:6379' }"), (value) =>
      decodeConfig("f.yaml", value, {})
    )
    expect(Either.isLeft(refused)).toBe(true)
    const message = Either.isLeft(refused) ? refused.left.message : ""
    expect(message).toContain("registry.url must be redis://HOST[:PORT][/DB]")
    expect(message).toContain("(got a user or password in the URL)")
    expect(message).not.toContain("s3cret")
  })

  it("a reload that changes it says it takes a restart", () => {
    const running = settingsFrom(noFlags, file(shared))
    const next = settingsFrom(
      noFlags,
      file("registry: { url: redis://10.0.0.9:6380/2, namespace: red, balancer-id: lb1 }")
    )
    expect(desiredFrom(next, running, true).restartNeeded).toEqual(["registry.namespace"])
  })
})

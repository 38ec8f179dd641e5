import { describe, expect, it } from "@effect/vitest"
import { Duration, Either } from "effect"
import { decodeConfig, parseConfig } from "../../src/programs/configFile.js"

/** The one line a file's text is refused with, or "ok". */
const verdict = (text: string, env: Record<string, string> = {}): string =>
  Either.match(
    Either.flatMap(parseConfig("f.yaml", text), (value) => decodeConfig("f.yaml", value, env)),
    {
      onLeft: (refused) => refused.message,
      onRight: () => "ok"
    }
  )

describe("the settings file", () => {
  it("reads every key, YAML or JSON, with the flags' own values", () => {
    const yaml = [
      "port: 4100",
      "strategy: weighted-least-connection",
      "servers: [127.0.0.1:4001, '[::1]:4002:3']",
      "health: { check: tcp, interval: 500ms, dead-after: 2s, rise: 2, fall: 3 }",
      "proxy: { port: 8080, max-connections: 5, connect-timeout: 1s, idle-timeout: 1m, drain-timeout: 0 }",
      "admin: { host: 0.0.0.0, port: 9000 }",
      "access-log: true",
      "token: { env: TOKEN }"
    ].join("\n")
    const decoded = Either.getOrThrow(
      Either.flatMap(parseConfig("f.yaml", yaml), (value) => decodeConfig("f.yaml", value, { TOKEN: "s3cret" }))
    )
    expect(decoded.port).toBe(4100)
    expect(decoded.servers).toEqual([
      { host: "127.0.0.1", port: 4001, weight: 1 },
      { host: "::1", port: 4002, weight: 3 }
    ])
    expect(decoded.health?.interval).toEqual(Duration.millis(500))
    expect(decoded.health?.check).toBe("tcp")
    expect(decoded.proxy?.["drain-timeout"]).toEqual(Duration.zero)
    expect(decoded.token).toBe("s3cret")
    expect(verdict('{"port": 0, "strategy": "round-robin"}')).toBe("ok")
    expect(verdict("")).toBe("ok")
  })

  it("refuses a bad file in one line naming the key, the rule and the value", () => {
    expect(verdict("health:\n  dead-after: 0")).toBe(
      "f.yaml: health.dead-after must be a duration from 10ms to 1h, like 500ms, 2s or 5m (got 0)"
    )
    expect(verdict('{"port": 70000}')).toBe("f.yaml: port must be an integer from 0 to 65535 (got 70000)")
    expect(verdict("servers:\n  - 127.0.0.1:4001\n  - 127.0.0.1:0")).toBe(
      "f.yaml: servers[1] must be host:port or host:port:weight, with a port from 1 to 65535 and a weight from 1 to 1000 (got 127.0.0.1:0)"
    )
    expect(verdict("strategy: fastest")).toMatch(/^f\.yaml: strategy must be one of round-robin, .* \(got fastest\)$/)
    expect(verdict("access-log: yes")).toBe("f.yaml: access-log must be true or false (got yes)")
    expect(verdict("health: tcp")).toBe(
      "f.yaml: health must be a map of keys like check, interval, dead-after (got tcp)"
    )
    expect(verdict("- 1")).toBe("f.yaml: the file must be a map of keys like host, port, strategy (got [1])")
  })

  it("refuses an unknown key, so a typo is never ignored", () => {
    expect(verdict("health:\n  dead-afer: 1s")).toBe(
      "f.yaml: health.dead-afer is not a known key in health (keys: check, interval, dead-after, rise, fall)"
    )
    expect(verdict("prot: 4000")).toMatch(/^f\.yaml: prot is not a known key \(keys: host, port, /)
  })

  it("says where YAML is broken, by line and column", () => {
    expect(verdict("port: 4000\nhealth:\n  rise: 2\n fall: 3\n")).toBe(
      "f.yaml: not valid YAML or JSON at line 4, column 1: All mapping items must start at the same column"
    )
    expect(verdict('{"port": 1,\n "port": 2}')).toMatch(/^f\.yaml: not valid YAML or JSON at line 2, .*unique/)
  })

  it("takes the token from an environment variable, and never shows a secret", () => {
    expect(verdict("token: { env: NOPE }")).toBe(
      "f.yaml: token must name a set environment variable (got env NOPE, which is not set)"
    )
    expect(verdict("token: { env: T }", { T: " padded" })).toBe(
      "f.yaml: token must be 1 to 1024 characters, no control characters, no space at either end (got a space at one end)"
    )
    expect(verdict("token: { file: x }")).toMatch(/^f\.yaml: token must be the token, or \{ env: NAME \}/)
  })

  it("reads slow start, passive health and the PROXY protocol, each by its flag's rule", () => {
    const yaml = [
      "slow-start: 30s",
      "passive-health: { eject-after: 5, eject-time: 10s, max-ejected-percent: 20 }",
      "proxy: { send-proxy: v2, accept-proxy: true }"
    ].join("\n")
    const decoded = Either.getOrThrow(Either.flatMap(parseConfig("f.yaml", yaml), (v) => decodeConfig("f.yaml", v, {})))
    expect(decoded["slow-start"]).toEqual(Duration.seconds(30))
    expect(decoded["passive-health"]).toEqual({
      "eject-after": 5,
      "eject-time": Duration.seconds(10),
      "max-ejected-percent": 20
    })
    expect(decoded.proxy).toEqual({ "send-proxy": "v2", "accept-proxy": true })
    expect(verdict("proxy: { send-proxy: off }")).toBe("ok")
    expect(verdict("slow-start: 2h")).toBe(
      "f.yaml: slow-start must be a duration from 0 to 1h, like 500ms, 2s or 5m (got 2h)"
    )
    expect(verdict("passive-health: { eject-after: -1 }")).toBe(
      "f.yaml: passive-health.eject-after must be an integer from 0 to 1000 (got -1)"
    )
    expect(verdict("passive-health: { max-ejected-percent: 101 }")).toBe(
      "f.yaml: passive-health.max-ejected-percent must be an integer from 0 to 100 (got 101)"
    )
    expect(verdict("proxy: { send-proxy: v3 }")).toBe("f.yaml: proxy.send-proxy must be one of v1, v2, off (got v3)")
    expect(verdict("proxy: { accept-proxy: v1 }")).toBe("f.yaml: proxy.accept-proxy must be true or false (got v1)")
    expect(verdict("passive-health: { eject-afer: 2 }")).toBe(
      "f.yaml: passive-health.eject-afer is not a known key in passive-health (keys: eject-after, eject-time, max-ejected-percent)"
    )
  })
})

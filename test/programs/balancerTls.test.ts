/**
 * The balancer's TLS from its settings: which listeners get a certificate, and what a reload does —
 * a renewed certificate and CA installed together, only once read and checked; a bad one refused
 * with nothing changed.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Fs from "node:fs"
import * as Path from "node:path"
import { reloadTls, startTls } from "../../src/programs/balancerTls.js"
import type { TlsSettings } from "../../src/programs/balancerSettings.js"
import { loadConfig } from "../../src/programs/configFile.js"
import { type Certificates, makeCertificates, openssl, skipReason } from "../support/tls.js"

if (openssl === undefined) console.log(skipReason)

const certs: Certificates | undefined = openssl === undefined ? undefined : makeCertificates()
afterAll(() => certs?.remove())

describe.skipIf(certs === undefined)("the balancer's TLS settings", () => {
  const c = certs as Certificates
  const settings = (overrides: Partial<TlsSettings> = {}): TlsSettings => ({
    cert: c.cert,
    key: c.key,
    listeners: ["balancer", "proxy"],
    backend: false,
    backendCa: undefined,
    ...overrides
  })
  const pem = (file: string) => Fs.readFileSync(file).toString()

  it.effect("gives a certificate to each listener named that runs, and none without a certificate", () =>
    Effect.gen(function* () {
      const both = yield* startTls(settings(), true)
      expect([both.balancer?.name, both.proxy?.name]).toEqual(["balancer", "proxy"])
      const noProxy = yield* startTls(settings(), false)
      expect([noProxy.balancer?.name, noProxy.proxy]).toEqual(["balancer", undefined])
      const proxyOnly = yield* startTls(settings({ listeners: ["proxy"] }), true)
      expect([proxyOnly.balancer, proxyOnly.proxy?.name]).toEqual([undefined, "proxy"])
      const none = yield* startTls(settings({ cert: undefined, key: undefined }), true)
      expect([none.balancer, none.proxy]).toEqual([undefined, undefined])
      const unpaired = yield* Effect.flip(startTls(settings({ key: undefined }), true))
      expect(unpaired.message).toBe("--tls-key must be given with --tls-cert (got none)")
    })
  )

  it.effect("a reload installs the renewed certificate and CA together, only when both are good", () =>
    Effect.gen(function* () {
      const running = yield* startTls(settings({ backendCa: c.ca }), true)
      const options = () => String(running.proxy?.options().cert)
      expect(options()).toBe(pem(c.cert))
      // Read and checked now; nothing changes until the install runs.
      const install = yield* reloadTls(running, settings({ cert: c.cert2, key: c.key2, backendCa: c.otherCa }))
      expect(options()).toBe(pem(c.cert))
      yield* install
      expect(options()).toBe(pem(c.cert2))
      expect(String(running.balancer?.options().cert)).toBe(pem(c.cert2))
      expect(String(running.backendTrust.current.ca)).toBe(pem(c.otherCa))
      // A key that is not the certificate's: refused whole, the CA in the same file not taken either.
      const refused = yield* Effect.flip(reloadTls(running, settings({ key: c.otherKey, backendCa: c.ca })))
      expect(refused.message).toMatch(/is not the private key of the certificate/)
      expect(options()).toBe(pem(c.cert2))
      expect(String(running.backendTrust.current.ca)).toBe(pem(c.otherCa))
    })
  )

  it.effect("the settings file's tls section: names relative to the file, listeners as a list or a line", () =>
    Effect.gen(function* () {
      const dir = Fs.mkdtempSync(Path.join(c.dir, "settings-"))
      const file = Path.join(dir, "lb.yaml")
      Fs.writeFileSync(file, "tls:\n  cert: a/cert.pem\n  key: /abs/key.pem\n  listeners: [proxy]\n  backend: true\n")
      const config = yield* loadConfig(file)
      expect(config.tls).toEqual({
        cert: Path.join(dir, "a", "cert.pem"),
        key: "/abs/key.pem",
        listeners: ["proxy"],
        backend: true
      })
      Fs.writeFileSync(file, "tls:\n  listeners: balancer, proxy\n")
      expect((yield* loadConfig(file)).tls?.listeners).toEqual(["balancer", "proxy"])
      Fs.writeFileSync(file, "tls:\n  listeners: []\n")
      expect((yield* Effect.flip(loadConfig(file))).message).toMatch(
        /tls\.listeners must be balancer, proxy, or both separated by a comma/
      )
    })
  )
})

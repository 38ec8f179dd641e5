/**
 * TLS with the real processes and throw-away certificates: a balancer serving TLS on its port and
 * its proxy, a server serving TLS on its port and registering over TLS, and the client, status and
 * a TLS client through the proxy, each trusting the test CA; a plain-text client, a client that does
 * not trust the CA and an unpaired certificate each refused in one clear line; the certificate read
 * again on SIGHUP with a connection open across it, and a bad one at SIGHUP changing nothing.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Effect } from "effect"
import * as Fs from "node:fs"
import * as NodeTls from "node:tls"
import * as Path from "node:path"
import { eventually } from "../support/eventually.js"
import { runToEnd, spawn } from "../support/process.js"
import { type Certificates, makeCertificates, openssl, peerSubject, skipReason, tlsExchange } from "../support/tls.js"

if (openssl === undefined) console.log(skipReason)

const certs: Certificates | undefined = openssl === undefined ? undefined : makeCertificates()
afterAll(() => certs?.remove())

const portIn = (match: RegExpMatchArray) => Number(match[1])

describe.skipIf(certs === undefined)("TLS between the real processes", () => {
  const c = certs as Certificates

  it.scopedLive(
    "balancer port, proxy and server port over TLS; the plain-text and the untrusting client refused, each saying why",
    () =>
      Effect.gen(function* () {
        const balancer = yield* spawn([
          "balancer",
          "--port",
          "0",
          "--proxy-port",
          "0",
          "--tls-cert",
          c.cert,
          "--tls-key",
          c.key,
          "--backend-ca",
          c.ca,
          "--probe-interval",
          "200ms"
        ])
        const port = portIn(yield* balancer.waitFor(/balancer listening on 127\.0\.0\.1:(\d+)/))
        const proxy = portIn(yield* balancer.waitFor(/proxy listening on 127\.0\.0\.1:(\d+)/))
        const at = `127.0.0.1:${port}`
        const server = yield* spawn([
          "server",
          "--port",
          "0",
          "--balancer",
          at,
          "--ca",
          c.ca,
          "--tls-cert",
          c.cert,
          "--tls-key",
          c.key
        ])
        yield* server.waitFor(/registered as (\S+)/)
        // Probed over TLS (checked against --backend-ca): live.
        const status = yield* eventually(
          runToEnd(["status", "--balancer", at, "--ca", c.ca, "--json"]),
          (status) => status.code === 0 && /"state":"live"/.test(status.output)
        )
        expect(status.output).toMatch(/"tls":true/)
        const list = yield* runToEnd(["client", "list", "--balancer", at, "--ca", c.ca])
        expect(list.errors).toBe("")
        expect(list.output).toMatch(/notes\.txt/)
        // Through the proxy: TLS from the client, TLS again to the server (it said it speaks TLS).
        const ping = yield* tlsExchange(proxy, c.ca, '{"_tag":"Ping"}\n')
        expect(ping.received).toMatch(/^\{"_tag":"Pong"/)
        const plain = yield* runToEnd(["client", "list", "--balancer", at])
        expect(plain.code).toBe(1)
        expect(plain.errors).toMatch(/this port speaks TLS: connect with TLS/)
        const distrust = yield* runToEnd(["status", "--balancer", at, "--ca", c.otherCa])
        expect(distrust.code).toBe(1)
        expect(distrust.errors.trim()).toBe(
          `effect-lb: cannot connect to ${at}: its certificate is not signed by a CA trusted here (UNABLE_TO_VERIFY_LEAF_SIGNATURE): give the CA that signed it with --ca`
        )
        // Both listeners went on serving, and said what they refused.
        expect((yield* runToEnd(["status", "--balancer", at, "--ca", c.ca])).code).toBe(0)
        expect(balancer.output()).toMatch(
          /TLS on balancer: a handshake from 127\.0\.0\.1:\d+ failed: the client spoke plain text/
        )
      }),
    30_000
  )

  it.scopedLive(
    "SIGHUP reads the certificate again: an open connection stays, the next gets the new one; a bad one changes nothing",
    () =>
      Effect.gen(function* () {
        const dir = Fs.mkdtempSync(Path.join(c.dir, "live-"))
        const cert = Path.join(dir, "cert.pem")
        const key = Path.join(dir, "key.pem")
        Fs.copyFileSync(c.cert, cert)
        Fs.copyFileSync(c.key, key)
        const balancer = yield* spawn(["balancer", "--port", "0", "--tls-cert", cert, "--tls-key", key])
        const port = portIn(yield* balancer.waitFor(/balancer listening on 127\.0\.0\.1:(\d+)/))
        const subject = peerSubject(port, c.ca)
        const open = yield* Effect.acquireRelease(
          Effect.async<NodeTls.TLSSocket>((resume) => {
            const socket = NodeTls.connect({ host: "127.0.0.1", port, ca: Fs.readFileSync(c.ca) }, () =>
              resume(Effect.succeed(socket))
            )
          }),
          (socket) => Effect.sync(() => socket.destroy())
        )
        expect(yield* subject).toBe("localhost")
        Fs.copyFileSync(c.cert2, cert)
        Fs.copyFileSync(c.key2, key)
        balancer.child.kill("SIGHUP")
        yield* eventually(subject, (name) => name === "reloaded")
        // The connection made before is still served.
        const answer = yield* Effect.async<string>((resume) => {
          open.once("data", (chunk: Buffer) => resume(Effect.succeed(chunk.toString())))
          open.write('{"_tag":"Status"}\n')
        })
        expect(answer).toMatch(/^\{"_tag":"StatusReport"/)
        // A key that is not the certificate's: refused, logged, the certificate in use stays.
        Fs.copyFileSync(c.otherKey, key)
        balancer.child.kill("SIGHUP")
        yield* eventually(
          Effect.sync(() => balancer.output()),
          (output) => /certificate reload refused, the running one stays: .*is not the private key/.test(output)
        )
        expect(yield* subject).toBe("reloaded")
        expect(balancer.child.exitCode).toBeNull()
      }),
    30_000
  )

  it.scopedLive(
    "the settings file's tls section: checked by check-config, file names relative to it, cert and key together",
    () =>
      Effect.gen(function* () {
        const dir = Fs.mkdtempSync(Path.join(c.dir, "config-"))
        Fs.copyFileSync(c.cert, Path.join(dir, "cert.pem"))
        Fs.copyFileSync(c.key, Path.join(dir, "key.pem"))
        const good = Path.join(dir, "good.yaml")
        Fs.writeFileSync(good, "port: 0\ntls:\n  cert: cert.pem\n  key: key.pem\n  listeners: [balancer]\n")
        const checked = yield* runToEnd(["check-config", good])
        expect(checked.code).toBe(0)
        const unpaired = Path.join(dir, "unpaired.yaml")
        Fs.writeFileSync(unpaired, "tls:\n  cert: cert.pem\n")
        const refused = yield* runToEnd(["check-config", unpaired])
        expect(refused.code).toBe(1)
        expect(refused.errors.trim()).toBe(`effect-lb: ${unpaired}: tls.key must be given with tls.cert (got none)`)
        const garbage = Path.join(dir, "garbage.yaml")
        Fs.writeFileSync(garbage, `tls:\n  cert: ${c.garbage}\n  key: key.pem\n`)
        const unusable = yield* runToEnd(["check-config", garbage])
        expect(unusable.code).toBe(1)
        expect(unusable.errors).toMatch(/garbage\.pem: not a PEM certificate/)
        const badList = Path.join(dir, "bad-list.yaml")
        Fs.writeFileSync(badList, "tls:\n  listeners: [admin]\n")
        expect((yield* runToEnd(["check-config", badList])).errors).toMatch(
          /tls\.listeners must be balancer, proxy, or both separated by a comma \(got admin\)/
        )
        // Started from elsewhere, the file's relative names are found beside it.
        const balancer = yield* spawn(["balancer", "--config", good])
        const port = portIn(yield* balancer.waitFor(/balancer listening on 127\.0\.0\.1:(\d+)/))
        const status = yield* runToEnd(["status", "--balancer", `127.0.0.1:${port}`, "--ca", c.ca])
        expect(status.code).toBe(0)
        // A renewed certificate in the same files: the reload (SIGHUP, with --config) installs it.
        Fs.copyFileSync(c.cert2, Path.join(dir, "cert.pem"))
        Fs.copyFileSync(c.key2, Path.join(dir, "key.pem"))
        balancer.child.kill("SIGHUP")
        const subject = peerSubject(port, c.ca)
        expect(yield* eventually(subject, (name) => name === "reloaded")).toBe("reloaded")
        expect(balancer.output()).toMatch(/configuration reloaded/)
      }),
    30_000
  )
})

/**
 * TLS on the server port and the balancer port, over real loopback sockets and throw-away
 * certificates: a trusted client is answered; a client that does not trust the certificate, a
 * plain-text client on a TLS port and a TLS client on a plain port each get a clear error, and the
 * listener goes on serving the others. Files that cannot serve are refused, naming file and reason.
 */
import { afterAll, describe, expect, it } from "@effect/vitest"
import { Effect, Layer } from "effect"
import { Locate, Ping, Register } from "../../../src/domain/Protocol.js"
import { Host, Port, ServerId, Weight } from "../../../src/domain/Server.js"
import * as ControlPlane from "../../../src/services/balancer/ControlPlane.js"
import { ask } from "../../../src/services/client/BalancerClient.js"
import { loadIdentity, loadTrust, makeListenerTls } from "../../../src/services/wire/Tls.js"
import * as Wire from "../../../src/services/wire/Wire.js"
import { balancerLayer } from "../../support/balancer.js"
import { servedFolder } from "../../support/fixtures.js"
import { lines, raw } from "../../support/net.js"
import { client, startServer } from "../../support/server.js"
import { type Certificates, makeCertificates, openssl, skipReason } from "../../support/tls.js"

if (openssl === undefined) console.log(skipReason)

const certs: Certificates | undefined = openssl === undefined ? undefined : makeCertificates()
afterAll(() => certs?.remove())

describe.skipIf(certs === undefined)("TLS on effect-lb's own ports", () => {
  const c = certs as Certificates

  it.effect("refuses certificate and key files that cannot serve, naming the file and why", () =>
    Effect.gen(function* () {
      const missing = yield* Effect.flip(loadIdentity({ cert: `${c.dir}/nope.pem`, key: c.key }))
      expect(missing.message).toBe(`${c.dir}/nope.pem: cannot be read: no such file (ENOENT)`)
      const garbage = yield* Effect.flip(loadIdentity({ cert: c.garbage, key: c.key }))
      expect(garbage.message).toMatch(/garbage\.pem: not a PEM certificate/)
      const mismatch = yield* Effect.flip(loadIdentity({ cert: c.cert, key: c.otherKey }))
      expect(mismatch.message).toMatch(/other-ca\.key: is not the private key of the certificate in .*server\.pem/)
      const badKey = yield* Effect.flip(loadIdentity({ cert: c.cert, key: c.garbage }))
      expect(badKey.message).toMatch(/garbage\.pem: not a usable PEM private key/)
      const badCa = yield* Effect.flip(loadTrust(c.garbage))
      expect(badCa.message).toMatch(/garbage\.pem: not a PEM certificate/)
      expect((yield* loadIdentity({ cert: c.cert, key: c.key })).subject).toBe("CN=localhost")
    })
  )

  it.scopedLive("the server port over TLS answers a trusted client; the others fail alone, each saying why", () =>
    Effect.gen(function* () {
      const folder = yield* servedFolder(1024)
      const tls = yield* makeListenerTls("server", { cert: c.cert, key: c.key })
      const server = yield* startServer(folder.root, { tls })
      const wire = yield* Wire.Wire
      const trusted = yield* loadTrust(c.ca)
      const ask = (connection: Parameters<typeof client>[0]) => client(connection).ask(new Ping())
      expect(yield* ask(yield* wire.connect(server.address, { tls: trusted }))).toMatchObject({ _tag: "Pong" })
      const distrust = yield* Effect.flip(wire.connect(server.address, { tls: yield* loadTrust(c.otherCa) }))
      expect(distrust.reason).toMatch(/not signed by a CA trusted here \(UNABLE_TO_VERIFY_LEAF_SIGNATURE\).*--ca/)
      const plain = yield* raw(server.address.port, '{"_tag":"Ping"}\n')
      expect(plain.closedByServer).toBe(true)
      expect(lines(plain.data)).toEqual([
        { _tag: "InvalidRequest", message: expect.stringMatching(/^this port speaks TLS/) }
      ])
      expect(yield* ask(yield* wire.connect(server.address, { tls: trusted }))).toMatchObject({ _tag: "Pong" })
    }).pipe(Effect.provide(Wire.layer))
  )

  it.scopedLive("a TLS client on a plain-text port is told so at once, not left to time out", () =>
    Effect.gen(function* () {
      const folder = yield* servedFolder(1024)
      const server = yield* startServer(folder.root)
      const wire = yield* Wire.Wire
      const refused = yield* Effect.flip(
        wire.connect(server.address, { tls: yield* loadTrust(c.ca), timeout: "3 seconds" })
      )
      expect(refused.reason).toMatch(/does not speak TLS .*plain-text port/)
      // What it answers, whatever the handshake's bytes hold: at once, with no newline to wait for.
      const hello = Buffer.from([0x16, 0x03, 0x01, 0x00, 0xc8, 0x01, 0x00, 0x00, 0xc4, 0x03, 0x03])
      const answer = yield* raw(server.address.port, hello, { expectLines: 1, waitMs: 2000 })
      expect(lines(answer.data)).toEqual([
        { _tag: "InvalidRequest", message: "a TLS handshake: this port speaks plain text, not TLS" }
      ])
      const plainAgain = yield* wire.connect(server.address)
      expect(yield* client(plainAgain).ask(new Ping())).toMatchObject({ _tag: "Pong" })
    }).pipe(Effect.provide(Wire.layer))
  )

  it.scopedLive("the balancer port over TLS: a server registers saying it speaks TLS, and Locate says so", () =>
    Effect.gen(function* () {
      const tls = yield* makeListenerTls("balancer", { cert: c.cert, key: c.key })
      const context = yield* Layer.build(
        ControlPlane.layer({ ...ControlPlane.defaults, port: 0, tls }).pipe(
          Layer.provideMerge(balancerLayer()),
          Layer.provideMerge(Wire.layer)
        )
      )
      const plane = yield* Effect.provide(ControlPlane.ControlPlane, context)
      const trust = yield* loadTrust(c.ca)
      const spec = {
        id: ServerId.make("s1"),
        host: Host.make("127.0.0.1"),
        port: Port.make(4101),
        weight: Weight.make(1)
      }
      const asking = (request: Parameters<typeof ask>[1]) =>
        Effect.provide(ask(plane.address, request, "3 seconds", trust), context)
      expect(yield* asking(new Register({ server: { ...spec, tls: true } }))).toMatchObject({ _tag: "Registered" })
      const located = yield* asking(new Locate({ exclude: [] }))
      expect(located).toMatchObject({ _tag: "Located", server: { id: "s1", port: 4101, tls: true } })
      const plain = yield* Effect.flip(
        Effect.provide(ask(plane.address, new Locate({ exclude: [] }), "2 seconds"), context)
      )
      expect(plain._tag).not.toBe("Located")
    })
  )
})

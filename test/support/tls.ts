/**
 * Throw-away certificates for the TLS tests, made by Debian's `openssl` in a temporary folder that is
 * removed afterwards: a CA, a server certificate it signed for 127.0.0.1, ::1 and localhost, a second
 * one (to show a reload), and, to be refused, a CA that signed nothing here, a key that is not the
 * certificate's and a file that is not PEM. Elliptic-curve keys: each takes milliseconds to make.
 */
import { Effect } from "effect"
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import * as Tls from "node:tls"

export interface Certificates {
  readonly dir: string
  readonly ca: string
  readonly cert: string
  readonly key: string
  /** Signed by `ca` too, with the subject `CN=reloaded`. */
  readonly cert2: string
  readonly key2: string
  /** A CA that signed none of these. */
  readonly otherCa: string
  /** A valid key, but not `cert`'s. */
  readonly otherKey: string
  /** Not PEM at all. */
  readonly garbage: string
  /** Removes the folder. */
  readonly remove: () => void
}

/** Where openssl is, or undefined (the TLS tests then say so in one line and skip). */
export const openssl: string | undefined = ["/usr/bin/openssl", "/bin/openssl", "/usr/local/bin/openssl"].find((path) =>
  Fs.existsSync(path)
)

export const skipReason = "TLS tests skipped: no openssl (apt-get install openssl)"

const run = (dir: string, args: ReadonlyArray<string>) => {
  if (openssl === undefined) throw new Error(skipReason)
  ChildProcess.execFileSync(openssl, args, { cwd: dir, stdio: ["ignore", "ignore", "pipe"], timeout: 10_000 })
}

const ecKey = (dir: string, name: string) =>
  run(dir, ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", name])

const selfSignedCa = (dir: string, name: string, subject: string) => {
  ecKey(dir, `${name}.key`)
  run(dir, ["req", "-x509", "-new", "-key", `${name}.key`, "-out", `${name}.pem`, "-days", "2", "-subj", subject])
}

const signed = (dir: string, name: string, subject: string) => {
  ecKey(dir, `${name}.key`)
  run(dir, ["req", "-new", "-key", `${name}.key`, "-out", `${name}.csr`, "-subj", subject])
  Fs.writeFileSync(
    Path.join(dir, `${name}.ext`),
    "subjectAltName=IP:127.0.0.1,IP:::1,DNS:localhost\nextendedKeyUsage=serverAuth\n"
  )
  run(dir, [
    "x509",
    "-req",
    "-in",
    `${name}.csr`,
    "-CA",
    "ca.pem",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-out",
    `${name}.pem`,
    "-days",
    "2",
    "-extfile",
    `${name}.ext`
  ])
}

/** Makes the set in a new temporary folder (synchronously: a few tens of milliseconds). */
export const makeCertificates = (): Certificates => {
  const dir = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-lb-tls-"))
  const at = (name: string) => Path.join(dir, name)
  selfSignedCa(dir, "ca", "/CN=effect-lb test CA")
  selfSignedCa(dir, "other-ca", "/CN=some other CA")
  signed(dir, "server", "/CN=localhost")
  signed(dir, "reloaded", "/CN=reloaded")
  Fs.writeFileSync(at("garbage.pem"), "this is not a certificate\n")
  return {
    dir,
    ca: at("ca.pem"),
    cert: at("server.pem"),
    key: at("server.key"),
    cert2: at("reloaded.pem"),
    key2: at("reloaded.key"),
    otherCa: at("other-ca.pem"),
    otherKey: at("other-ca.key"),
    garbage: at("garbage.pem"),
    remove: () => Fs.rmSync(dir, { recursive: true, force: true })
  }
}

/**
 * A TLS client on 127.0.0.1:`port` trusting `ca`: sends `send` (after `before`, in clear, when given:
 * a PROXY protocol header), half-closes, and collects the answer until the close. Fails with the
 * TLS error when the handshake does.
 */
export const tlsExchange = (
  port: number,
  ca: string,
  send: string,
  before?: Buffer | string
): Effect.Effect<{ readonly received: string; readonly subject: string }, Error> =>
  Effect.async<{ received: string; subject: string }, Error>((resume) => {
    const socket = Net.createConnection({ host: "127.0.0.1", port, allowHalfOpen: true })
    if (before !== undefined) socket.write(before)
    const secure = Tls.connect({ socket, ca: Fs.readFileSync(ca) })
    const chunks: Array<Buffer> = []
    let subject = ""
    secure.on("secureConnect", () => {
      subject = String(secure.getPeerCertificate().subject.CN)
      secure.end(send)
    })
    secure.on("data", (chunk: Buffer) => chunks.push(chunk))
    secure.on("error", (error) => resume(Effect.fail(error)))
    secure.on("close", () => resume(Effect.succeed({ received: Buffer.concat(chunks).toString(), subject })))
    return Effect.sync(() => secure.destroy())
  }).pipe(Effect.timeoutFail({ duration: "5 seconds", onTimeout: () => new Error("no answer in 5 s") }))

/** A TLS echo server on 127.0.0.1 with `cert`/`key` (a backend that speaks TLS), closed with the scope. */
export const tlsEcho = (certs: Certificates, name: string) => {
  const open = new Set<Net.Socket>()
  return Effect.acquireRelease(
    Effect.async<Tls.Server>((resume) => {
      const server = Tls.createServer(
        { cert: Fs.readFileSync(certs.cert), key: Fs.readFileSync(certs.key), allowHalfOpen: true },
        (socket) => {
          const chunks: Array<Buffer> = []
          socket.on("error", () => undefined)
          socket.on("data", (chunk: Buffer) => chunks.push(chunk))
          socket.on("end", () => socket.end(Buffer.concat([Buffer.from(`${name}|`), ...chunks])))
        }
      )
      // Every TCP connection, handshake done or not: a client that gave up mid-handshake leaves one
      // half-open (allowHalfOpen), which the release closes.
      server.on("connection", (socket: Net.Socket) => {
        open.add(socket)
        socket.on("close", () => open.delete(socket))
      })
      server.listen(0, "127.0.0.1", () => resume(Effect.succeed(server)))
    }),
    (server) =>
      Effect.async<void>((resume) => {
        open.forEach((socket) => socket.destroy())
        server.close(() => resume(Effect.void))
      })
  )
}

export const portOf = (server: Net.Server): number => {
  const address = server.address()
  return typeof address === "object" && address !== null ? address.port : 0
}

/** The subject CN of the certificate a TLS port on 127.0.0.1 serves now (checked against `ca`). */
export const peerSubject = (port: number, ca: string): Effect.Effect<string, Error> =>
  Effect.async<string, Error>((resume) => {
    const socket = Tls.connect({ host: "127.0.0.1", port, ca: Fs.readFileSync(ca) }, () => {
      resume(Effect.succeed(String(socket.getPeerCertificate().subject.CN)))
      socket.destroy()
    })
    socket.on("error", (error) => resume(Effect.fail(error)))
    return Effect.sync(() => socket.destroy())
  })

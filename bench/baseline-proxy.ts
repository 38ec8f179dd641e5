/**
 * The yardstick for proxy mode: a minimal `node:net` pipe proxy to one backend, nothing else. Given
 * a certificate and its key (`baseline-proxy.js HOST:PORT CERT KEY`), it terminates TLS first
 * (`node:tls`), the yardstick for the TLS proxy.
 */
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Tls from "node:tls"

const [host = "127.0.0.1", port = "0"] = (process.argv[2] ?? "").split(":")
const [cert, key] = process.argv.slice(3)
const pipe = (client: Net.Socket) => {
  const backend = Net.connect({ host, port: Number(port), noDelay: true })
  client.pipe(backend).pipe(client)
  client.on("error", () => backend.destroy())
  backend.on("error", () => client.destroy())
}
const server =
  cert === undefined || key === undefined
    ? Net.createServer({ noDelay: true }, pipe)
    : Tls.createServer({ cert: Fs.readFileSync(cert), key: Fs.readFileSync(key), noDelay: true }, pipe)
server.listen(0, "127.0.0.1", () => {
  const address = server.address()
  if (address !== null && typeof address === "object") console.log(`listening on 127.0.0.1:${address.port}`)
})

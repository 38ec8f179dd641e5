/**
 * A small HTTP backend for the proxy benchmark: answers every request with a short body. Given a
 * certificate and its key (`http-backend.js CERT KEY`), it serves HTTPS instead.
 */
import * as Fs from "node:fs"
import * as Http from "node:http"
import * as Https from "node:https"

const body = "hello from the backend\n"
const answer = (_: Http.IncomingMessage, response: Http.ServerResponse) => {
  response.writeHead(200, { "content-type": "text/plain", "content-length": Buffer.byteLength(body) })
  response.end(body)
}
const [cert, key] = process.argv.slice(2)
const server =
  cert === undefined || key === undefined
    ? Http.createServer(answer)
    : Https.createServer({ cert: Fs.readFileSync(cert), key: Fs.readFileSync(key) }, answer)
server.keepAliveTimeout = 60_000
server.listen(0, "127.0.0.1", () => {
  const address = server.address()
  if (address !== null && typeof address === "object") console.log(`listening on 127.0.0.1:${address.port}`)
})

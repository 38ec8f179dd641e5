/** A small HTTP backend for the proxy benchmark: answers every request with a short body. */
import * as Http from "node:http"

const body = "hello from the backend\n"
const server = Http.createServer((_, response) => {
  response.writeHead(200, { "content-type": "text/plain", "content-length": Buffer.byteLength(body) })
  response.end(body)
})
server.keepAliveTimeout = 60_000
server.listen(0, "127.0.0.1", () => {
  const address = server.address()
  if (address !== null && typeof address === "object") console.log(`listening on 127.0.0.1:${address.port}`)
})

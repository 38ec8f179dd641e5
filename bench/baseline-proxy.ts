/** The yardstick for proxy mode: a minimal `node:net` pipe proxy to one backend, nothing else. */
import * as Net from "node:net"

const [host = "127.0.0.1", port = "0"] = (process.argv[2] ?? "").split(":")
const server = Net.createServer({ noDelay: true }, (client) => {
  const backend = Net.connect({ host, port: Number(port), noDelay: true })
  client.pipe(backend).pipe(client)
  client.on("error", () => backend.destroy())
  backend.on("error", () => client.destroy())
})
server.listen(0, "127.0.0.1", () => {
  const address = server.address()
  if (address !== null && typeof address === "object") console.log(`listening on 127.0.0.1:${address.port}`)
})

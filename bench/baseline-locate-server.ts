/**
 * The yardstick for Locate: a plain `node:net` server that answers every line with the same
 * `Located` reply. No parsing, no validation, no strategy, no Effect.
 */
import * as Net from "node:net"

const reply = JSON.stringify({ _tag: "Located", server: { id: "s1", host: "127.0.0.1", port: 4001 } }) + "\n"
const server = Net.createServer({ noDelay: true }, (socket) => {
  socket.on("data", (chunk: Buffer) => {
    let lines = 0
    for (const byte of chunk) if (byte === 10) lines++
    if (lines > 0) socket.write(lines === 1 ? reply : reply.repeat(lines))
  })
  socket.on("end", () => socket.end())
  socket.on("error", () => undefined)
})
server.listen(0, "127.0.0.1", () => {
  const address = server.address()
  if (address !== null && typeof address === "object") console.log(`listening on 127.0.0.1:${address.port}`)
})

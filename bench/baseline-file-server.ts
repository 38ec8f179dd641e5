/**
 * The yardstick for downloads: a plain `node:net` server that reads one request line and pipes the
 * named file from its folder, with the same header line effect-lb sends. No validation, no Effect.
 */
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Path from "node:path"

const folder = process.argv[2] ?? "."
const server = Net.createServer((socket) => {
  let buffered = ""
  const onData = (chunk: Buffer) => {
    buffered += chunk.toString()
    const end = buffered.indexOf("\n")
    if (end < 0) return
    socket.off("data", onData)
    const request = JSON.parse(buffered.slice(0, end)) as { name: string }
    const path = Path.join(folder, request.name)
    const size = Fs.statSync(path).size
    socket.write(JSON.stringify({ _tag: "FileHeader", name: request.name, size }) + "\n")
    // The same read size as effect-lb uses, so the ratio measures the framework, not a tuning knob.
    Fs.createReadStream(path, { highWaterMark: 256 * 1024 }).pipe(socket)
  }
  socket.on("data", onData)
  socket.on("error", () => undefined)
})
server.listen(0, "127.0.0.1", () => {
  const address = server.address()
  if (address !== null && typeof address === "object") console.log(`listening on 127.0.0.1:${address.port}`)
})

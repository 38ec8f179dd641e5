/**
 * Memory per idle connection: RSS of each process before and after 5,000 silent connections, for
 * effect-lb's balancer, its server, and a plain node:net server holding the same connections.
 *
 *   npm run bench:memory [-- --connections 5000]
 */
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import { parseArgs } from "node:util"
import { effectLb, fixed, start } from "./support.js"

const { values } = parseArgs({ options: { connections: { type: "string", default: "5000" } } })
const count = Number(values.connections)

const rssKb = (pid: number) => Number(/VmRSS:\s+(\d+)/.exec(Fs.readFileSync(`/proc/${pid}/status`, "utf8"))?.[1] ?? 0)

const hold = (port: number): Promise<Array<Net.Socket>> =>
  new Promise((resolve) => {
    const sockets: Array<Net.Socket> = []
    let open = 0
    for (let i = 0; i < count; i++) {
      const socket = Net.createConnection({ host: "127.0.0.1", port })
      socket.on("connect", () => {
        if (++open === count) resolve(sockets)
      })
      socket.on("error", () => undefined)
      sockets.push(socket)
    }
  })

const settle = () => new Promise((r) => setTimeout(r, 1500))

const folder = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-lb-mem-"))
const baselineScript = Path.join(Path.dirname(new URL(import.meta.url).pathname), "baseline-locate-server.js")
const targets = [
  ["effect-lb balancer", [effectLb, "balancer", "--port", "0", "--probe-interval", "1h", "--idle-timeout", "1h"]],
  [
    "effect-lb server",
    [effectLb, "server", "--port", "0", "--files", folder, "--idle-timeout", "1h", "--max-connections", "100000"]
  ],
  ["plain node:net", [baselineScript]]
] as const
console.log(`memory per idle connection: RSS before and after ${count} silent connections`)
for (const [name, args] of targets) {
  const child = await start(args)
  await settle()
  const before = rssKb(child.pid)
  const sockets = await hold(child.port)
  await settle()
  const after = rssKb(child.pid)
  console.log(
    `  ${name.padEnd(20)} ${fixed(before / 1024, 1).padStart(6)} MB -> ${fixed(after / 1024, 1).padStart(6)} MB   ${fixed((after - before) / count, 2)} KB per connection`
  )
  sockets.forEach((socket) => socket.destroy())
  await child.stop()
}
Fs.rmSync(folder, { recursive: true, force: true })

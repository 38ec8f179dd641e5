/**
 * Download throughput over loopback: effect-lb's server against a plain `node:net` file pipe, the
 * same file, interleaved rounds in one run. Prints MB/s for each and the ratio.
 *
 *   npm run bench:download [-- --size-mb 100 --rounds 5]
 */
import * as Crypto from "node:crypto"
import * as Fs from "node:fs"
import * as Net from "node:net"
import * as Os from "node:os"
import * as Path from "node:path"
import { parseArgs } from "node:util"
import { effectLb, fixed, median, start } from "./support.js"

const { values } = parseArgs({
  options: { "size-mb": { type: "string", default: "100" }, rounds: { type: "string", default: "5" } }
})
const sizeMb = Number(values["size-mb"])
const rounds = Number(values.rounds)

/** Downloads `name` once; resolves with MB/s (header to last byte). */
const download = (port: number, name: string, size: number): Promise<number> =>
  new Promise((resolve, reject) => {
    const startedAt = process.hrtime.bigint()
    const socket = Net.createConnection({ host: "127.0.0.1", port })
    let received = 0
    let headerDone = false
    socket.on("data", (chunk: Buffer) => {
      if (!headerDone) {
        const end = chunk.indexOf(10)
        if (end < 0) return
        headerDone = true
        received += chunk.length - end - 1
      } else received += chunk.length
      if (received >= size) {
        const seconds = Number(process.hrtime.bigint() - startedAt) / 1e9
        socket.destroy()
        resolve(size / 1e6 / seconds)
      }
    })
    socket.on("error", reject)
    socket.write(JSON.stringify({ _tag: "Download", name }) + "\n")
  })

const folder = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-lb-bench-"))
const size = sizeMb * 1024 * 1024
const file = Path.join(folder, "payload.bin")
const block = Crypto.randomBytes(1024 * 1024)
const fd = Fs.openSync(file, "w")
for (let i = 0; i < sizeMb; i++) Fs.writeSync(fd, block)
Fs.closeSync(fd)

const baselineScript = Path.join(Path.dirname(new URL(import.meta.url).pathname), "baseline-file-server.js")
const lb = await start([effectLb, "server", "--port", "0", "--files", folder])
const baseline = await start([baselineScript, folder])
try {
  const results = { effect: [] as Array<number>, node: [] as Array<number> }
  await download(lb.port, "payload.bin", size) // warm-up
  await download(baseline.port, "payload.bin", size)
  for (let round = 0; round < rounds; round++) {
    results.effect.push(await download(lb.port, "payload.bin", size))
    results.node.push(await download(baseline.port, "payload.bin", size))
  }
  const effect = median(results.effect)
  const node = median(results.node)
  console.log(`download of a ${sizeMb} MB file over loopback, ${rounds} interleaved rounds (median MB/s)`)
  console.log(
    `  effect-lb server     ${fixed(effect, 0)} MB/s   (rounds: ${results.effect.map((v) => fixed(v, 0)).join(", ")})`
  )
  console.log(
    `  plain node:net pipe  ${fixed(node, 0)} MB/s   (rounds: ${results.node.map((v) => fixed(v, 0)).join(", ")})`
  )
  console.log(`  ratio effect-lb / node:net = ${fixed(effect / node)}  (aim >= 0.8)`)
} finally {
  await lb.stop()
  await baseline.stop()
  Fs.rmSync(folder, { recursive: true, force: true })
}

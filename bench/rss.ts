/**
 * Memory at start: the resident set (VmRSS) of `effect-lb balancer --port 0` and `effect-lb server
 * --port 0`, started through bin/effect-lb.js as a user starts them, against a plain node:net server,
 * each read from /proc 1 s after it listens (the start's garbage settled, no collection forced).
 * Each command first with an empty V8 code cache of its own (its first start after installing),
 * then 3 rounds with the cache that start saved (every later start); the aim, at most 80 MB, is
 * for both.
 *
 *   npm run bench:rss
 */
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { effectLb, fixed, median, start } from "./support.js"

const aimMb = 80
const rounds = 3

interface Resident {
  readonly rss: number
  readonly anonymous: number
  readonly file: number
}

/** VmRSS and its anonymous and file-backed parts, in MB, from /proc/PID/status. */
const residentOf = (pid: number): Resident => {
  const status = Fs.readFileSync(`/proc/${pid}/status`, "utf8")
  const field = (name: string) => Number(new RegExp(`${name}:\\s+(\\d+)`).exec(status)?.[1] ?? 0) / 1024
  return { rss: field("VmRSS"), anonymous: field("RssAnon"), file: field("RssFile") }
}

const sleep = (ms: number) => new Promise((wake) => setTimeout(wake, ms))

/**
 * Starts `node args...`, reads its memory 1 s after it listens, and stops it with SIGTERM so it
 * exits as it would for a user (bin/effect-lb.js saves the code cache at exit).
 */
const measure = async (args: ReadonlyArray<string>): Promise<Resident> => {
  const child = await start(args)
  await sleep(1000)
  const resident = residentOf(child.pid)
  const exited = new Promise<void>((done) => {
    const poll = setInterval(() => {
      if (!Fs.existsSync(`/proc/${child.pid}`)) {
        clearInterval(poll)
        done()
      }
    }, 20)
  })
  process.kill(child.pid, "SIGTERM")
  await Promise.race([exited, sleep(5000)])
  await child.stop()
  return resident
}

const caches = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-lb-rss-"))
/** The code cache folder the next start uses: one per command (bin/effect-lb.js reads XDG_CACHE_HOME). */
const useCache = (name: string) => {
  process.env["XDG_CACHE_HOME"] = Path.join(caches, name.replace(/\W+/g, "-"))
}
const baseline = Path.join(Path.dirname(new URL(import.meta.url).pathname), "baseline-locate-server.js")
const commands = [
  ["effect-lb balancer", [effectLb, "balancer", "--port", "0"]],
  ["effect-lb server", [effectLb, "server", "--port", "0"]]
] as const
const plain = ["plain node:net", [baseline]] as const

const line = (name: string, resident: Resident, node: number, aim: boolean) =>
  `  ${name.padEnd(20)} ${fixed(resident.rss, 1).padStart(6)} MB  (anonymous ${fixed(resident.anonymous, 1).padStart(5)}, ` +
  `file ${fixed(resident.file, 1).padStart(5)})  ${fixed(resident.rss / node, 2)}× plain node` +
  (aim ? `   aim <= ${aimMb} MB: ${resident.rss <= aimMb ? "met" : "NOT met"}` : "")

const medianOf = (values: ReadonlyArray<Resident>): Resident => ({
  rss: median(values.map((value) => value.rss)),
  anonymous: median(values.map((value) => value.anonymous)),
  file: median(values.map((value) => value.file))
})

try {
  console.log(`RSS at start, 1 s after listening; node ${process.version}, ${Os.cpus().length} CPUs`)
  const first: Array<Resident> = []
  for (const [name, args] of commands) {
    useCache(name)
    first.push(await measure(args))
  }
  const later: Array<Array<Resident>> = commands.map(() => [])
  const plainRuns: Array<Resident> = []
  for (let round = 0; round < rounds; round++) {
    for (const [i, [name, args]] of commands.entries()) {
      useCache(name)
      later[i]?.push(await measure(args))
    }
    plainRuns.push(await measure(plain[1]))
  }
  const node = medianOf(plainRuns)
  console.log(`first start (empty code cache):`)
  commands.forEach(([name], i) => {
    const resident = first[i]
    if (resident !== undefined) console.log(line(name, resident, node.rss, true))
  })
  console.log(`later starts (code cache saved by the first), median of ${rounds}:`)
  commands.forEach(([name], i) => console.log(line(name, medianOf(later[i] ?? []), node.rss, true)))
  console.log(line(plain[0], node, node.rss, false))
} finally {
  Fs.rmSync(caches, { recursive: true, force: true })
}

/**
 * Start-up time of the command line: `effect-lb --version` against a bare `node -e 0`, run in turns
 * (10 each, the same minute on the same machine), and the ratio against the aim (at most 2×). Then,
 * for information, the first run with an empty code cache and a one-shot command that fails at once
 * (`status` against a closed port).
 *
 *   npm run bench:coldstart
 */
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"
import * as Os from "node:os"
import * as Path from "node:path"
import { effectLb } from "./support.js"

const runs = 10
const aim = 2

/** Wall-clock milliseconds of one `node args...`, output discarded, with its own code cache folder. */
const timed = (args: ReadonlyArray<string>, cache: string): number => {
  const started = process.hrtime.bigint()
  ChildProcess.spawnSync(process.execPath, args, {
    stdio: "ignore",
    env: { ...process.env, XDG_CACHE_HOME: cache }
  })
  return Number(process.hrtime.bigint() - started) / 1e6
}

const median = (values: ReadonlyArray<number>) => {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? (sorted[middle] ?? 0) : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2
}

const figures = (values: ReadonlyArray<number>) =>
  `median ${median(values).toFixed(0)} ms, min ${Math.min(...values).toFixed(0)}, max ${Math.max(...values).toFixed(0)}`

const cache = Fs.mkdtempSync(Path.join(Os.tmpdir(), "effect-lb-coldstart-"))
try {
  const version = [effectLb, "--version"]
  const status = [effectLb, "status", "--balancer", "127.0.0.1:1"]
  const firstRun = timed(version, cache)
  const bare: Array<number> = []
  const versions: Array<number> = []
  const statuses: Array<number> = []
  timed(status, cache) // its programs' code joins the cache too
  for (let i = 0; i < runs; i++) {
    bare.push(timed(["-e", "0"], cache))
    versions.push(timed(version, cache))
    statuses.push(timed(status, cache))
  }
  const ratio = median(versions) / median(bare)
  console.log(`node ${process.version}, ${Os.cpus().length} CPUs, ${runs} runs each, in turns`)
  console.log(`node -e 0                             ${figures(bare)}`)
  console.log(`effect-lb --version                   ${figures(versions)}`)
  console.log(
    `ratio ${ratio.toFixed(2)}× (aim: at most ${aim}×, ${ratio <= aim ? "met" : "NOT met"}); ` +
      `first run, empty code cache: ${firstRun.toFixed(0)} ms`
  )
  console.log(`effect-lb status --balancer 127.0.0.1:1 ${figures(statuses)} (connection refused; for information)`)
} finally {
  Fs.rmSync(cache, { recursive: true, force: true })
}

/** Shared pieces of the benchmark scripts: child processes, timing, and printing figures. */
import * as ChildProcess from "node:child_process"
import * as Path from "node:path"
import { fileURLToPath } from "node:url"

const here = Path.dirname(fileURLToPath(import.meta.url))
/** bin/effect-lb.js, from dist/bench/ or bench/. */
export const effectLb = Path.resolve(
  here,
  here.includes(`${Path.sep}dist${Path.sep}`) ? "../.." : "..",
  "bin",
  "effect-lb.js"
)

export interface Child {
  readonly port: number
  readonly pid: number
  readonly stop: () => Promise<void>
}

/** Starts `node args...` and waits until it prints `listening on host:PORT`. */
export const start = (args: ReadonlyArray<string>): Promise<Child> =>
  new Promise((resolve, reject) => {
    const child = ChildProcess.spawn(process.execPath, args, { stdio: ["ignore", "pipe", "inherit"] })
    let out = ""
    const onData = (chunk: Buffer) => {
      out += chunk.toString()
      const match = /listening on [^\s]*:(\d+)/.exec(out)
      if (match?.[1] !== undefined) {
        child.stdout.off("data", onData)
        child.stdout.resume()
        resolve({
          port: Number(match[1]),
          pid: child.pid ?? 0,
          stop: () =>
            new Promise((done) => {
              child.once("exit", () => done())
              child.kill("SIGKILL")
            })
        })
      }
    }
    child.stdout.on("data", onData)
    child.once("exit", (code) => reject(new Error(`${args.join(" ")} exited with ${code}: ${out}`)))
  })

export const median = (values: ReadonlyArray<number>): number => {
  const sorted = [...values].sort((a, b) => a - b)
  const middle = Math.floor(sorted.length / 2)
  return sorted.length % 2 === 1 ? (sorted[middle] ?? 0) : ((sorted[middle - 1] ?? 0) + (sorted[middle] ?? 0)) / 2
}

export const fixed = (value: number, digits = 2): string => value.toFixed(digits)

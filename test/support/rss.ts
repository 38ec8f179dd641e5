/** A process's resident memory, from /proc (Linux). */
import * as Fs from "node:fs"

export const rssMb = (pid: number | undefined): number => {
  const status = Fs.readFileSync(`/proc/${pid ?? 0}/status`, "utf8")
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0)
  return kb / 1024
}

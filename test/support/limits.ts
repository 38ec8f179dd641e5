/**
 * The open-files limit, for tests that open many sockets: a machine with the common limit of 1,024
 * must run them too. Node cannot read or raise its own limit, so a shell started by this process
 * (it inherits the limit, as every `effect-lb` child does) reads it.
 */
import * as ChildProcess from "node:child_process"
import * as Fs from "node:fs"

/** The soft open-files limit of this process and its children (`ulimit -n`); Infinity if unlimited. */
export const openFilesLimit = (): number => {
  const text = ChildProcess.execFileSync("sh", ["-c", "ulimit -n"], { encoding: "utf8" }).trim()
  const limit = Number(text)
  return text === "unlimited" || !Number.isFinite(limit) ? Number.POSITIVE_INFINITY : limit
}

/** Descriptors this process has open now (Linux; elsewhere a generous guess). */
export const openFilesInUse = (): number => {
  try {
    return Fs.readdirSync("/proc/self/fd").length
  } catch {
    return 256
  }
}

/**
 * How many connections a test may hold open at once, up to `wanted`: what the limit leaves after
 * this process's descriptors, less `margin` for the child at the other end (its own files,
 * listeners and the connections the test makes beside these).
 */
export const connectionsWithinLimit = (wanted: number, margin = 128): number =>
  Math.max(1, Math.min(wanted, openFilesLimit() - openFilesInUse() - margin))

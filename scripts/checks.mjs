// The static checks of `npm test` (types, lint, architecture, formatting), run side by side: each is
// one single-threaded process, so on two cores or more this takes the time of the slowest (the lint)
// instead of their sum. Each check's output is printed whole when it ends; any failure fails the run.
import { spawn } from "node:child_process"

const checks = ["typecheck", "lint", "deps", "format:check"]
const npm = process.platform === "win32" ? "npm.cmd" : "npm"

const run = (name) =>
  new Promise((resolve) => {
    const started = Date.now()
    const child = spawn(npm, ["run", "--silent", name], { stdio: ["ignore", "pipe", "pipe"] })
    const output = []
    child.stdout.on("data", (chunk) => output.push(chunk))
    child.stderr.on("data", (chunk) => output.push(chunk))
    child.on("close", (code) => {
      const seconds = ((Date.now() - started) / 1000).toFixed(1)
      process.stdout.write(`> ${name}: ${code === 0 ? "ok" : `FAILED (exit ${code})`} in ${seconds} s\n`)
      if (code !== 0 || output.length > 0) process.stdout.write(Buffer.concat(output))
      resolve(code === 0)
    })
  })

const results = await Promise.all(checks.map(run))
process.exit(results.every(Boolean) ? 0 : 1)

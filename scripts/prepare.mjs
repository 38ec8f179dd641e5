// npm's `prepare`: builds dist/ for a checkout installed from git, packed, or installed with `npm ci`.
// Under CI, `npm ci` is followed by `npm test`, which builds first: building here too would only
// repeat the same 20 seconds, so that one case is skipped.
import { spawnSync } from "node:child_process"

if (process.env.CI === "true" && process.env.npm_command === "ci") {
  console.log("prepare: skipped under CI's npm ci (npm test builds)")
  process.exit(0)
}
const npm = process.platform === "win32" ? "npm.cmd" : "npm"
const built = spawnSync(npm, ["run", "build"], { stdio: "inherit" })
process.exit(built.status ?? 1)

/** `effect-lb check-config FILE`: checks a settings file without starting anything, as `haproxy -c` does. */
import { Args, Command } from "@effect/cli"
import { Console, Effect } from "effect"
import { loadIdentity, loadTrust } from "../services/wire/Tls.js"
import { type ConfigFile, loadConfig } from "./configFile.js"
import { json } from "./options.js"

/** One line: what the file sets up (what it leaves out takes the balancer's defaults). */
export const summary = (file: string, config: ConfigFile): string => {
  const servers = config.servers?.length ?? 0
  const parts = [
    `balancer port ${config.port ?? "4000 (default)"}`,
    `strategy ${config.strategy ?? "round-robin (default)"}`,
    `${servers} server${servers === 1 ? "" : "s"}`,
    `health ${config.health?.check ?? "ping"}`,
    ...(config.proxy?.port === undefined ? [] : [`proxy port ${config.proxy.port}`]),
    ...(config.admin?.port === undefined ? [] : [`admin port ${config.admin.port}`]),
    ...(config.token === undefined ? [] : ["token set"]),
    ...(config.tls?.cert === undefined ? [] : [`TLS on ${(config.tls.listeners ?? ["balancer", "proxy"]).join(", ")}`]),
    ...(config.tls?.backend === true ? ["TLS to the servers"] : [])
  ]
  return `${file}: OK (${parts.join(", ")})`
}

/** The certificate, key and CA files the file names, read and checked as the balancer will (as `haproxy -c` does). */
const certificatesOf = (config: ConfigFile) => {
  const tls = config.tls
  return Effect.all([
    tls?.cert === undefined || tls.key === undefined ? Effect.void : loadIdentity({ cert: tls.cert, key: tls.key }),
    tls?.["backend-ca"] === undefined ? Effect.void : loadTrust(tls["backend-ca"])
  ])
}

export const checkConfigCommand = Command.make(
  "check-config",
  { file: Args.text({ name: "FILE" }).pipe(Args.withDescription("the YAML or JSON settings file to check")), json },
  ({ file, json }) =>
    Effect.flatMap(loadConfig(file), (config) =>
      Effect.zipRight(
        certificatesOf(config),
        Console.log(json ? JSON.stringify({ file, valid: true }) : summary(file, config))
      )
    )
).pipe(
  Command.withDescription("check a balancer settings file without starting anything: exit 0 if it is good, else 1")
)

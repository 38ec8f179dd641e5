/**
 * The TLS options every command shares, and what they become: a listener's certificate
 * (`--tls-cert`, `--tls-key`: both or neither) and a connecting side's trust (`--tls`, `--ca FILE`;
 * a CA file given means TLS, so `--tls` may be left out with it).
 */
import { Options } from "@effect/cli"
import { Effect, Option } from "effect"
import { type Identity, loadTrust, systemTrust, type TlsRefused, type Trust } from "../services/wire/Tls.js"
import { fileRule, InvalidOption, optional } from "./options.js"

/** `--tls-cert` and `--tls-key`: the certificate this command's listener serves TLS with. */
export const certificateOptions = (what: string) => ({
  tlsCert: optional(
    "tls-cert",
    fileRule,
    `serve TLS on ${what} with this certificate (PEM, chain after the leaf; reloaded on SIGHUP); needs --tls-key`,
    "plain TCP"
  ),
  tlsKey: optional("tls-key", fileRule, "the private key of --tls-cert (PEM)", "none")
})

/** `--tls` and `--ca`: speak TLS to the balancer, trusting its certificate from these CAs. */
export const trustOptions = {
  tls: Options.boolean("tls").pipe(
    Options.withDescription(
      "speak TLS to the balancer; its certificate must be signed by a CA the system trusts, or by --ca [default: off]"
    )
  ),
  ca: optional(
    "ca",
    fileRule,
    "trust certificates signed by the CA certificates in this file (PEM); implies --tls",
    "the system's CAs"
  )
}

/** The certificate and key given, both or neither: one without the other is refused. */
export const identityFrom = (
  cert: Option.Option<string>,
  key: Option.Option<string>,
  names: { readonly cert: string; readonly key: string } = { cert: "--tls-cert", key: "--tls-key" }
): Effect.Effect<Option.Option<Identity>, InvalidOption> => {
  if (Option.isSome(cert) && Option.isSome(key))
    return Effect.succeed(Option.some({ cert: cert.value, key: key.value }))
  if (Option.isSome(cert))
    return Effect.fail(new InvalidOption({ option: names.key, rule: `given with ${names.cert}`, got: "none" }))
  if (Option.isSome(key))
    return Effect.fail(new InvalidOption({ option: names.cert, rule: `given with ${names.key}`, got: "none" }))
  return Effect.succeed(Option.none())
}

/** What `--tls` and `--ca` ask for: no TLS (undefined), or TLS trusting the system's CAs or the file's. */
export const trustFrom = (tls: boolean, ca: Option.Option<string>): Effect.Effect<Trust | undefined, TlsRefused> =>
  Option.match(ca, {
    onNone: () => Effect.succeed(tls ? systemTrust : undefined),
    onSome: (file) => loadTrust(file, "--ca")
  })

/** A scripted terminal: keys go in, what would be displayed is collected. @effect/platform ships none. */
import { Terminal } from "@effect/platform"
import { Effect, Layer, Mailbox, Option } from "effect"

export const key = (name: string, input: string | undefined = name): Terminal.UserInput => ({
  input: input === undefined ? Option.none() : Option.some(input),
  key: { name, ctrl: false, meta: false, shift: false }
})
export const enter = key("enter", undefined)
export const down = key("down", undefined)
export const backspace = key("backspace", undefined)
/** One key per character, as a person types it. */
export const type = (text: string) => [...text].map((char) => key(char))

/** Plays `inputs`, then ends the input (a prompt waiting for more then quits); a plain output unless `tty`. */
export const layer = (inputs: ReadonlyArray<Terminal.UserInput>, shown: Array<string>, tty = false) =>
  Layer.effect(
    Terminal.Terminal,
    Effect.gen(function* () {
      const mailbox = yield* Mailbox.make<Terminal.UserInput>()
      mailbox.unsafeOfferAll(inputs)
      yield* mailbox.end
      return Terminal.Terminal.of({
        columns: Effect.succeed(100),
        rows: Effect.succeed(40),
        isTTY: Effect.succeed(tty),
        readInput: Effect.succeed(mailbox),
        readLine: Effect.succeed(""),
        display: (text) =>
          Effect.sync(() => {
            shown.push(text)
          })
      })
    })
  )

const escapes = new RegExp(`${String.fromCharCode(27)}\\[[0-9;?]*[A-Za-z]`, "g")

/** What was shown, with the prompts' ANSI styling and cursor moves taken out. */
export const plain = (shown: ReadonlyArray<string>) => shown.join("").replace(escapes, "")

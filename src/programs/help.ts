/**
 * Help and errors as plain text: `@effect/cli`'s help documents rendered without escape codes,
 * wrapped to the terminal's width, with the boilerplate it adds to every option left out (each of
 * our options' own description says its rule and its default).
 */
import type { HelpDoc } from "@effect/cli"
import type { Span } from "@effect/cli/HelpDoc/Span"
import { globalRules } from "./globals.js"

/** The text of a span, without styles. */
export const spanText = (span: Span): string => {
  switch (span._tag) {
    case "Text":
    case "URI":
      return span.value
    case "Weak":
    case "Strong":
    case "Highlight":
      return spanText(span.value)
    case "Sequence":
      return spanText(span.left) + spanText(span.right)
  }
}

type Block =
  | { readonly _tag: "Header"; readonly text: string }
  | { readonly _tag: "Paragraph"; readonly text: string; readonly first: Span }
  | { readonly _tag: "Definition"; readonly term: string; readonly paragraphs: ReadonlyArray<string> }

const blocks = (doc: HelpDoc.HelpDoc): ReadonlyArray<Block> => {
  switch (doc._tag) {
    case "Empty":
      return []
    case "Header":
      return [{ _tag: "Header", text: spanText(doc.value) }]
    case "Paragraph":
      return [{ _tag: "Paragraph", text: spanText(doc.value), first: firstSpan(doc.value) }]
    case "Sequence":
      return [...blocks(doc.left), ...blocks(doc.right)]
    case "Enumeration":
      return doc.elements.flatMap(blocks)
    case "DescriptionList":
      return doc.definitions.map(([term, definition]) => ({
        _tag: "Definition",
        term: spanText(term).trim(),
        paragraphs: blocks(definition).flatMap((block) =>
          block._tag === "Paragraph" && !boilerplate(block.text) ? [block.text] : []
        )
      }))
  }
}

const firstSpan = (span: Span): Span => (span._tag === "Sequence" ? firstSpan(span.left) : span)

/** What `@effect/cli` says of every option of a kind; our descriptions say more, so these go. */
const boilerplate = (text: string) =>
  /^(A user-defined piece of text\.|A true or false value\.|An integer\.|A floating point number\.|An existing (file|directory|file or directory)\.|This setting is optional\.|This option may be repeated|This option must be repeated|One of the following:)/.test(
    text
  )

/** Words of `text` in lines of at most `width` characters (a word longer than that is cut). */
export const wrap = (text: string, width: number): ReadonlyArray<string> => {
  const room = Math.max(width, 1)
  const lines: Array<string> = []
  let line = ""
  for (const word of text.split(/\s+/).filter((w) => w.length > 0)) {
    const candidate = line === "" ? word : `${line} ${word}`
    if (candidate.length <= room) {
      line = candidate
      continue
    }
    if (line !== "") lines.push(line)
    let rest = word
    while (rest.length > room) {
      lines.push(rest.slice(0, room))
      rest = rest.slice(room)
    }
    line = rest
  }
  if (line !== "") lines.push(line)
  return lines
}

const indented = (text: string, indent: number, width: number) =>
  wrap(text, width - indent).map((line) => " ".repeat(indent) + line)

/** A term and its description: side by side when both fit, the description below the term otherwise. */
const definition = (term: string, description: string, width: number): ReadonlyArray<string> => {
  const column = width >= 60 ? 26 : 6
  const termLines = indented(term, 2, width)
  const descriptionLines = indented(description, column, width)
  const onlyTerm = termLines[0] ?? ""
  const firstDescription = descriptionLines[0]
  if (termLines.length === 1 && firstDescription !== undefined && onlyTerm.length + 2 <= column) {
    return [onlyTerm.padEnd(column) + firstDescription.slice(column), ...descriptionLines.slice(1)]
  }
  return [...termLines, ...descriptionLines]
}

/** The parts of a command's help document, by section. */
const sections = (doc: HelpDoc.HelpDoc) => {
  const found = new Map<string, Array<Block>>()
  let current: Array<Block> = []
  for (const block of blocks(doc)) {
    if (block._tag === "Header") {
      current = []
      found.set(block.text, current)
    } else current.push(block)
  }
  return found
}

export interface HelpPage {
  /** `["effect-lb", "client", "download"]` */
  readonly path: ReadonlyArray<string>
  /** The command's own help document (`Descriptor.getHelp`). */
  readonly doc: HelpDoc.HelpDoc
  /** Its subcommands, in order, with their descriptions. */
  readonly commands: ReadonlyArray<{ readonly name: string; readonly description: string }>
  /** Whether it runs by itself when no subcommand is given. */
  readonly runsAlone: boolean
  readonly version: string
  readonly width: number
}

const globalOptions = [
  ["--log-level LEVEL", `minimum level of log lines [default: info; ${globalRules["--log-level"].says}]`],
  [
    "--log-format FORMAT",
    `log lines for people, or one JSON object per line with timestamp, level, message, annotations and spans [default: pretty; ${globalRules["--log-format"].says}]`
  ],
  ["-h, --help", "show this help"],
  ["--version", "print the version"]
] as const

/** A command's help as plain text, every line at most `width` characters. */
export const renderHelp = (page: HelpPage): string => {
  const width = Math.max(page.width, 20)
  const parts = sections(page.doc)
  const description = (parts.get("DESCRIPTION") ?? []).flatMap((b) => (b._tag === "Paragraph" ? [b.text] : []))
  const args = (parts.get("ARGUMENTS") ?? []).flatMap((b) => (b._tag === "Definition" ? [b] : []))
  const options = (parts.get("OPTIONS") ?? []).flatMap((b) => (b._tag === "Definition" ? [b] : []))
  const name = page.path.join(" ")
  const commandWord = page.commands.length === 0 ? [] : [page.runsAlone ? "[COMMAND]" : "COMMAND"]
  const usage = [name, ...commandWord, "[options]", ...args.map((arg) => arg.term)].join(" ")
  const lines: Array<string> = []
  const section = (title: string, body: ReadonlyArray<string>) => {
    if (body.length > 0) lines.push("", title, ...body)
  }
  lines.push(...wrap(page.path.length === 1 ? `${name} ${page.version}` : name, width))
  for (const text of description) lines.push(...wrap(text, width))
  section("Usage:", indented(usage, 2, width))
  section(
    "Commands:",
    page.commands.flatMap((command) => definition(command.name, command.description, width))
  )
  section(
    "Arguments:",
    args.flatMap((arg) => definition(arg.term, arg.paragraphs.join(" "), width))
  )
  section(
    "Options:",
    options.flatMap((option) => definition(option.term, option.paragraphs.join(" "), width))
  )
  section(
    "Global options (anywhere on the line):",
    globalOptions.flatMap(([term, text]) => definition(term, text, width))
  )
  if (page.commands.length > 0) lines.push("", ...wrap(`Run '${name} COMMAND --help' for a command's options.`, width))
  return lines.join("\n")
}

/** The first paragraph of a command's DESCRIPTION. */
export const descriptionOf = (doc: HelpDoc.HelpDoc): string =>
  (sections(doc).get("DESCRIPTION") ?? []).flatMap((b) => (b._tag === "Paragraph" ? [b.text] : []))[0] ?? ""

/** An error document as one line of text, and the option it names when it starts with one (`--port`, `SECONDS`). */
export const errorLine = (doc: HelpDoc.HelpDoc): { readonly text: string; readonly names: string | undefined } => {
  const all = blocks(doc)
  const text = all
    .map((block) => (block._tag === "Definition" ? `${block.term} ${block.paragraphs.join(" ")}` : block.text))
    .join(" ")
    .replace(/\s+/g, " ")
    .trim()
  const first = all[0]
  return {
    text,
    names: first?._tag === "Paragraph" && first.first._tag === "Strong" ? spanText(first.first) : undefined
  }
}

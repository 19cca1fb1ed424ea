/**
 * Text that came from somewhere banger does not trust (a guest, mostly), made safe to print on
 * a terminal: C0 and C1 control characters (ESC, BEL, CSI 0x9b, NUL, DEL, ...) become visible
 * escapes such as `\x1b`, so an OSC 52 clipboard write, a title change or a clear-screen is
 * shown, never obeyed. Bidirectional overrides and line separators, which make text read
 * differently from what it is, are shown as `\u202e` and the like.
 */

// C0, DEL and C1; the bidi marks, embeddings, overrides and isolates; LS and PS.
const UNSAFE = /[\x00-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;
const UNSAFE_BUT_LINES =
  /[\x00-\x08\x0b-\x1f\x7f-\x9f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

function escapeOne(c: string): string {
  if (c === "\n") return "\\n";
  if (c === "\t") return "\\t";
  if (c === "\r") return "\\r";
  const code = c.charCodeAt(0);
  return code < 0x100
    ? `\\x${code.toString(16).padStart(2, "0")}`
    : `\\u${code.toString(16).padStart(4, "0")}`;
}

/** One line's worth: every control character escaped, newlines and tabs included (table cells, names). */
export function visible(text: string): string {
  return text.replace(UNSAFE, escapeOne);
}

/** Like `visible`, but newlines and tabs stay as they are (error messages quoting guest stderr). */
export function visibleLines(text: string): string {
  return text.replace(UNSAFE_BUT_LINES, escapeOne);
}

/** The last `lines` lines of `text`, at most `maxChars` of them: what an error quotes of a tool's stderr. */
export function tailLines(text: string, lines = 5, maxChars = 2000): string {
  const tail = text.trim().split("\n").slice(-lines).join("\n");
  return tail.length > maxChars ? `...${tail.slice(-maxChars)}` : tail;
}

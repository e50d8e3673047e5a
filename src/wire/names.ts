/**
 * Names (usernames and rooms): the one pattern they follow, the folding
 * that decides when two usernames are the same name, and the Unicode TS #39
 * "highly restrictive" script rule for usernames. Pure functions with no
 * dependency, so the server, the token tools and the clients (web bundle,
 * terminal) share one copy. It does not decide who holds a name: that is the
 * reducer's.
 *
 * @module
 */

/** Names: 1 to 32 Unicode letters, digits, `_`, `-` and `.`. */
export const NAME_PATTERN: RegExp = /^[\p{L}\p{N}_.-]{1,32}$/u;

/** What {@linkcode NAME_PATTERN} takes, for error texts. */
export const NAME_RULE = "must be 1 to 32 letters, digits, '_', '-' or '.'";

/** What the script rule takes, for error texts. */
export const SCRIPT_RULE =
  "must not mix scripts (letters of one script, or Latin with Chinese, Japanese or Korean)";

/**
 * The key under which two usernames are the same name: NFKC, then full case
 * folding (upper then lower case, so `ß` and `SS` meet), then NFKC again.
 * `Alice`, `alice`, `ALICE` and fullwidth `ＡＬＩＣＥ` all fold to `alice`.
 */
export function foldName(name: string): string {
  return name.normalize("NFKC").toUpperCase().toLowerCase().normalize("NFKC");
}

/** ISO 15924 codes JavaScript's `\p{Script_Extensions=…}` knows (Common, Inherited and Unknown left out). */
const SCRIPTS =
  ("Adlm Aghb Ahom Arab Armi Armn Avst Bali Bamu Bass Batk Beng Bhks Bopo " +
    "Brah Brai Bugi Buhd Cakm Cans Cari Cham Cher Chrs Copt Cpmn Cprt Cyrl " +
    "Deva Diak Dogr Dsrt Dupl Egyp Elba Elym Ethi Gara Geor Glag Gong Gonm " +
    "Goth Gran Grek Gujr Gukh Guru Hang Hani Hano Hatr Hebr Hira Hluw Hmng " +
    "Hmnp Hung Ital Java Kali Kana Kawi Khar Khmr Khoj Kits Knda Krai Kthi " +
    "Lana Laoo Latn Lepc Limb Lina Linb Lisu Lyci Lydi Mahj Maka Mand Mani " +
    "Marc Medf Mend Merc Mero Miao Mlym Modi Mong Mroo Mtei Mult Mymr Nagm " +
    "Nand Narb Nbat Newa Nkoo Nshu Ogam Olck Onao Orkh Orya Osge Osma Ougr " +
    "Palm Pauc Perm Phag Phli Phlp Phnx Plrd Prti Rjng Rohg Runr Samr Sarb " +
    "Saur Sgnw Shaw Shrd Sidd Sind Sinh Sogd Sogo Sora Soyo Sund Sunu Sylo " +
    "Syrc Tagb Takr Tale Talu Taml Tang Tavt Telu Tfng Tglg Thaa Thai Tibt " +
    "Tirh Tnsa Todr Toto Tutg Ugar Vaii Vith Wara Wcho Xpeo Xsux Yezi Yiii " +
    "Zanb").split(" ").flatMap((code) => {
      try {
        return [[code, new RegExp(`^\\p{scx=${code}}$`, "u")] as const];
      } catch {
        return []; // A runtime with an older Unicode lacks a few scripts.
      }
    });

/** Characters of every script: digits, `_`, `-`, `.` and combining marks. */
const ANY_SCRIPT = /^[\p{scx=Zyyy}\p{scx=Zinh}]$/u;

/**
 * TS #39's augmented script sets: Han also stands for Japanese (`Jpan`),
 * Chinese with Bopomofo (`Hanb`) and Korean (`Kore`); kana for Japanese;
 * Hangul for Korean; Bopomofo for `Hanb`.
 */
const AUGMENT: Readonly<Record<string, readonly string[]>> = {
  Hani: ["Jpan", "Hanb", "Kore"],
  Hira: ["Jpan"],
  Kana: ["Jpan"],
  Hang: ["Kore"],
  Bopo: ["Hanb"],
};

/** The augmented script set of one character; `null` for a character of every script. */
function scriptsOf(char: string): Set<string> | null {
  if (char.charCodeAt(0) < 0x80) {
    return /[A-Za-z]/.test(char) ? new Set(["Latn"]) : null;
  }
  if (ANY_SCRIPT.test(char)) return null;
  const found = new Set<string>();
  for (const [code, pattern] of SCRIPTS) {
    if (!pattern.test(char)) continue;
    found.add(code);
    for (const extra of AUGMENT[code] ?? []) found.add(extra);
  }
  // A letter of no listed script is its own script.
  if (found.size === 0) found.add(`?${char}`);
  return found;
}

function intersect(a: Set<string> | null, b: Set<string>): Set<string> {
  return a === null ? b : new Set([...a].filter((code) => b.has(code)));
}

/**
 * Whether `name` meets Unicode TS #39's "highly restrictive" level: its
 * letters are of one script, or Latin together with Japanese (Han, Hiragana,
 * Katakana), Chinese (Han, Bopomofo) or Korean (Han, Hangul). Digits and
 * `_-.` go with any script. `名前a1` passes; `аdmin` (Cyrillic `а`) does not.
 */
export function isSingleScript(name: string): boolean {
  // deno-lint-ignore no-control-regex
  if (/^[\x00-\x7f]*$/.test(name)) return true; // ASCII: Latin and Common.
  let all: Set<string> | null = null;
  let nonLatin: Set<string> | null = null;
  for (const char of name) {
    const scripts = scriptsOf(char);
    if (scripts === null) continue;
    all = intersect(all, scripts);
    if (!scripts.has("Latn")) nonLatin = intersect(nonLatin, scripts);
  }
  if (all === null || all.size > 0) return true;
  return nonLatin !== null &&
    (nonLatin.has("Jpan") || nonLatin.has("Hanb") || nonLatin.has("Kore"));
}

/**
 * Checks a username: the name pattern, then the script rule. Returns `null`
 * when it is a valid username, else what it must be (to follow a field name).
 */
export function usernameProblem(name: string): string | null {
  if (!NAME_PATTERN.test(name)) return NAME_RULE;
  if (!isSingleScript(name)) return SCRIPT_RULE;
  return null;
}

/**
 * The sender of administrators' messages to a room (`POST
 * /api/rooms/<room>/messages`): a name no user may take.
 */
export const SYSTEM_SENDER = "system";

/** Whether `name` is (folds to) a name reserved for the server, {@linkcode SYSTEM_SENDER}. */
export function isReservedName(name: string): boolean {
  return foldName(name) === SYSTEM_SENDER;
}

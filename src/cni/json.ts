/**
 * JSON exactly as Go's encoding/json writes it, so that what tapnet writes (the result cache, the
 * configuration it hands to plugins) is byte-for-byte what Go's libcni writes for the same input:
 * map keys sorted by their UTF-8 bytes, struct fields in declaration order, `<`, `>`, `&`, U+2028 and
 * U+2029 escaped, `[]byte` as standard base64, float64 formatting. Pure.
 */

/** A Go struct: fields in declaration order (omitempty is the caller's business: leave the field out). */
export class GoStruct {
  constructor(readonly fields: ReadonlyArray<readonly [string, unknown]>) {}
}

/** Build a GoStruct from [name, value] pairs, dropping those whose value is undefined (omitempty). */
export function goStruct(...fields: Array<readonly [string, unknown]>): GoStruct {
  return new GoStruct(fields.filter((f) => f[1] !== undefined));
}

const HEX = '0123456789abcdef';

/** A string literal as Go writes it (HTML-safe escaping, as json.Marshal does by default). */
export function goQuote(s: string): string {
  let out = '"';
  let start = 0;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    let esc: string | undefined;
    if (c < 0x20 || c === 0x22 || c === 0x5c || c === 0x3c || c === 0x3e || c === 0x26) {
      switch (c) {
        case 0x22:
          esc = '\\"';
          break;
        case 0x5c:
          esc = '\\\\';
          break;
        case 0x0a:
          esc = '\\n';
          break;
        case 0x0d:
          esc = '\\r';
          break;
        case 0x09:
          esc = '\\t';
          break;
        case 0x08:
          esc = '\\b';
          break;
        case 0x0c:
          esc = '\\f';
          break;
        default:
          esc = `\\u00${HEX[c >> 4]}${HEX[c & 15]}`;
      }
    } else if (c === 0x2028 || c === 0x2029) {
      esc = c === 0x2028 ? '\\u2028' : '\\u2029';
    } else if (c >= 0xd800 && c <= 0xdfff) {
      // A lone surrogate is invalid UTF-8 once encoded: Go writes the replacement character.
      const next = s.charCodeAt(i + 1);
      if (c <= 0xdbff && next >= 0xdc00 && next <= 0xdfff) {
        i++;
        continue;
      }
      esc = '\\ufffd';
    }
    if (esc !== undefined) {
      out += s.slice(start, i) + esc;
      start = i + 1;
    }
  }
  return `${out}${s.slice(start)}"`;
}

/** Compare two strings as Go does (by UTF-8 bytes, i.e. by code point). */
export function compareGoStrings(a: string, b: string): number {
  const n = Math.min(a.length, b.length);
  for (let i = 0; i < n; i++) {
    const x = a.charCodeAt(i);
    const y = b.charCodeAt(i);
    if (x === y) continue;
    // A surrogate stands for a code point above U+FFFF: it sorts after every other UTF-16 unit.
    const xs = x >= 0xd800 && x <= 0xdfff;
    const ys = y >= 0xd800 && y <= 0xdfff;
    if (xs !== ys) return xs ? 1 : -1;
    return x < y ? -1 : 1;
  }
  return a.length - b.length;
}

/** A float64 as Go formats it ('f' between 1e-6 and 1e21, else 'e' with a short exponent). */
function goNumber(n: number): string {
  if (!Number.isFinite(n)) throw new RangeError(`json: unsupported value: ${n}`);
  if (Object.is(n, -0)) return '-0';
  return String(n);
}

/**
 * Marshal `v` as Go's json.Marshal would marshal the equivalent Go value: plain objects are maps
 * (keys sorted), GoStruct instances are structs (declared order), Uint8Arrays are []byte (base64).
 * Undefined object members are left out; undefined array elements become null.
 */
export function goMarshal(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  switch (typeof v) {
    case 'string':
      return goQuote(v);
    case 'number':
      return goNumber(v);
    case 'boolean':
      return v ? 'true' : 'false';
    case 'bigint':
      return v.toString();
    case 'object': {
      if (v instanceof GoStruct) {
        return `{${v.fields.map(([k, x]) => `${goQuote(k)}:${goMarshal(x)}`).join(',')}}`;
      }
      if (v instanceof Uint8Array)
        return goQuote(Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64'));
      if (Array.isArray(v)) return `[${v.map((x) => goMarshal(x)).join(',')}]`;
      const obj = v as Record<string, unknown>;
      const keys = Object.keys(obj)
        .filter((k) => obj[k] !== undefined)
        .sort(compareGoStrings);
      return `{${keys.map((k) => `${goQuote(k)}:${goMarshal(obj[k])}`).join(',')}}`;
    }
    default:
      throw new TypeError(`json: unsupported type: ${typeof v}`);
  }
}

/** Go's json.Indent over compact JSON: `{}`/`[]` stay closed, `"k": v`, one element per line. */
export function goIndent(compact: string, prefix = '', indent = '    '): string {
  let out = '';
  let depth = 0;
  let inString = false;
  let needIndent = false;
  const newline = (): string => `\n${prefix}${indent.repeat(depth)}`;
  for (let i = 0; i < compact.length; i++) {
    const c = compact[i]!;
    if (inString) {
      out += c;
      if (c === '\\') out += compact[++i] ?? '';
      else if (c === '"') inString = false;
      continue;
    }
    if (needIndent && c !== ']' && c !== '}') {
      needIndent = false;
      depth++;
      out += newline();
    }
    switch (c) {
      case '"':
        inString = true;
        out += c;
        break;
      case '{':
      case '[':
        out += c;
        needIndent = true;
        break;
      case ',':
        out += c + newline();
        break;
      case ':':
        out += ': ';
        break;
      case '}':
      case ']':
        if (needIndent) {
          needIndent = false; // empty: stays `{}` / `[]`
        } else {
          depth--;
          out += newline();
        }
        out += c;
        break;
      default:
        out += c;
    }
  }
  return out;
}

/** json.MarshalIndent(v, "", "    "), as Go prints results (cnitool, skel). */
export function goMarshalIndent(v: unknown, indent = '    '): string {
  return goIndent(goMarshal(v), '', indent);
}

/**
 * Round-trip through Go's `map[string]interface{}`: what libcni's InjectConf does to a configuration
 * (unmarshal into a map, marshal back). Keys come out sorted, numbers as float64.
 */
export function goRemarshal(bytes: Buffer | string): string {
  return goMarshal(JSON.parse(typeof bytes === 'string' ? bytes : bytes.toString('utf8')));
}

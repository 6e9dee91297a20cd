/**
 * A strict YAML subset, enough for configuration files: block mappings and sequences, single-line flow
 * collections (`[a, b]`, `{k: v}`), plain/single-quoted/double-quoted scalars resolved by the YAML 1.2
 * core schema (so `yes` and `02:00:00:00:00:01` stay strings), comments, one optional `---`.
 *
 * Everything else is refused with the line number rather than guessed at: tabs in indentation, anchors,
 * aliases, tags, block scalars (`|`, `>`), multi-line plain scalars, complex keys, directives, several
 * documents, duplicate keys.
 */
import { TapnetError } from '../errors.js';

export type YamlValue = null | boolean | number | string | YamlValue[] | { [key: string]: YamlValue };

interface Line {
  no: number;
  indent: number;
  text: string;
}

class Parser {
  private i = 0;

  constructor(
    private readonly lines: Line[],
    private readonly source: string,
  ) {}

  fail(no: number, msg: string): never {
    throw new TapnetError('ERR_CONFIG', `${this.source}:${no}: ${msg}`, {
      details: { file: this.source, line: no },
    });
  }

  get line(): Line | undefined {
    return this.lines[this.i];
  }

  document(): YamlValue {
    if (!this.line) return null;
    const v = this.block(this.line.indent);
    if (this.line) this.fail(this.line.no, 'unexpected content (check the indentation)');
    return v;
  }

  private block(indent: number): YamlValue {
    const l = this.line!;
    if (l.indent !== indent) this.fail(l.no, 'bad indentation');
    return isSeqItem(l.text) ? this.sequence(indent) : this.mapping(indent);
  }

  private sequence(indent: number): YamlValue[] {
    const out: YamlValue[] = [];
    while (this.line && this.line.indent === indent && isSeqItem(this.line.text)) {
      const l = this.line;
      const rest = l.text.slice(1).replace(/^ +/, '');
      if (rest === '') {
        this.i++;
        const next = this.line;
        out.push(next && next.indent > indent ? this.block(next.indent) : null);
        continue;
      }
      const col = indent + (l.text.length - rest.length);
      if (isSeqItem(rest) || splitKey(rest, l.no, this) !== undefined) {
        // `- key: value` or `- - x`: a nested collection starting on this line, at the column of `rest`.
        this.lines[this.i] = { no: l.no, indent: col, text: rest };
        out.push(this.block(col));
        continue;
      }
      this.i++;
      out.push(inline(rest, l.no, this));
    }
    if (this.line && this.line.indent > indent) this.fail(this.line.no, 'bad indentation');
    return out;
  }

  private mapping(indent: number): { [key: string]: YamlValue } {
    const out: { [key: string]: YamlValue } = Object.create(null);
    while (this.line && this.line.indent === indent && !isSeqItem(this.line.text)) {
      const l = this.line;
      const kv = splitKey(l.text, l.no, this);
      if (!kv) this.fail(l.no, `expected "key: value", got ${JSON.stringify(l.text)}`);
      const [key, valueText] = kv;
      if (Object.hasOwn(out, key)) this.fail(l.no, `duplicate key ${JSON.stringify(key)}`);
      this.i++;
      if (valueText === '') {
        const next = this.line;
        if (next && next.indent > indent) out[key] = this.block(next.indent);
        else if (next && next.indent === indent && isSeqItem(next.text)) out[key] = this.sequence(indent);
        else out[key] = null;
      } else {
        if (splitKey(valueText, l.no, this) !== undefined && !/^["'[{]/.test(valueText)) {
          this.fail(l.no, 'a mapping cannot start on the same line as its key');
        }
        out[key] = inline(valueText, l.no, this);
      }
    }
    if (this.line && this.line.indent > indent) this.fail(this.line.no, 'bad indentation');
    return { ...out };
  }
}

function isSeqItem(text: string): boolean {
  return text === '-' || text.startsWith('- ');
}

/** `key: rest` → [key, rest]; undefined when the text is not a mapping entry. */
function splitKey(text: string, no: number, p: Parser): [string, string] | undefined {
  if (text.startsWith('"') || text.startsWith("'")) {
    const { value, end } = quoted(text, 0, no, p);
    const after = text.slice(end);
    if (after === ':' || after.startsWith(': ')) return [value, after.slice(1).trim()];
    return undefined;
  }
  if (text.startsWith('? ')) p.fail(no, 'complex keys (`? `) are not supported');
  for (let k = 0; k < text.length; k++) {
    if (text[k] === ':' && (k === text.length - 1 || text[k + 1] === ' ')) {
      const key = text.slice(0, k).trim();
      if (key === '') p.fail(no, 'empty key');
      if (/^[[{]/.test(key)) return undefined;
      return [key, text.slice(k + 1).trim()];
    }
  }
  return undefined;
}

function quoted(text: string, start: number, no: number, p: Parser): { value: string; end: number } {
  const q = text[start];
  let out = '';
  let k = start + 1;
  while (k < text.length) {
    const c = text[k]!;
    if (q === "'") {
      if (c === "'") {
        if (text[k + 1] === "'") {
          out += "'";
          k += 2;
          continue;
        }
        return { value: out, end: k + 1 };
      }
      out += c;
      k++;
      continue;
    }
    if (c === '"') return { value: out, end: k + 1 };
    if (c === '\\') {
      const e = text[k + 1];
      const simple: Record<string, string> = {
        '"': '"',
        '\\': '\\',
        '/': '/',
        n: '\n',
        t: '\t',
        r: '\r',
        '0': '\0',
      };
      if (e !== undefined && e in simple) {
        out += simple[e];
        k += 2;
        continue;
      }
      if (e === 'u' && /^[0-9a-fA-F]{4}$/.test(text.slice(k + 2, k + 6))) {
        out += String.fromCharCode(Number.parseInt(text.slice(k + 2, k + 6), 16));
        k += 6;
        continue;
      }
      p.fail(no, `unsupported escape \\${e ?? ''} in a double-quoted string`);
    }
    out += c;
    k++;
  }
  return p.fail(no, 'unterminated quoted string');
}

/** A plain scalar by the YAML 1.2 core schema. */
function plain(s: string, no: number, p: Parser): YamlValue {
  if (/^[&*!|>%@`]/.test(s)) {
    p.fail(
      no,
      `${JSON.stringify(s[0])} (anchors, aliases, tags, block scalars, directives) is not supported; quote the value`,
    );
  }
  if (s === '' || s === '~' || /^(null|Null|NULL)$/.test(s)) return null;
  if (/^(true|True|TRUE)$/.test(s)) return true;
  if (/^(false|False|FALSE)$/.test(s)) return false;
  if (/^[-+]?[0-9]+$/.test(s)) return Number(s);
  if (/^0x[0-9a-fA-F]+$/.test(s)) return Number.parseInt(s.slice(2), 16);
  if (/^0o[0-7]+$/.test(s)) return Number.parseInt(s.slice(2), 8);
  if (/^[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?$/.test(s)) return Number(s);
  return s;
}

/** A value on one line: a flow collection, a quoted or a plain scalar. */
function inline(text: string, no: number, p: Parser): YamlValue {
  const f = new Flow(text, no, p);
  const v = f.value(false);
  f.skipSpaces();
  if (f.k !== text.length) p.fail(no, `unexpected ${JSON.stringify(text.slice(f.k))} after the value`);
  return v;
}

class Flow {
  k = 0;
  constructor(
    private readonly t: string,
    private readonly no: number,
    private readonly p: Parser,
  ) {}

  skipSpaces(): void {
    while (this.t[this.k] === ' ') this.k++;
  }

  value(inFlow: boolean): YamlValue {
    this.skipSpaces();
    const c = this.t[this.k];
    if (c === '[') return this.seq();
    if (c === '{') return this.map();
    if (c === '"' || c === "'") {
      const { value, end } = quoted(this.t, this.k, this.no, this.p);
      this.k = end;
      return value;
    }
    const stop = inFlow ? /[,[\]{}]/ : /$^/;
    let e = this.k;
    while (e < this.t.length && !stop.test(this.t[e]!)) {
      if (inFlow && this.t[e] === ':' && (this.t[e + 1] === ' ' || this.t[e + 1] === undefined)) break;
      e++;
    }
    const s = this.t.slice(this.k, e).trim();
    this.k = e;
    return plain(s, this.no, this.p);
  }

  private expect(c: string): void {
    this.skipSpaces();
    if (this.t[this.k] !== c)
      this.p.fail(this.no, `expected ${JSON.stringify(c)} in a flow collection (they must fit on one line)`);
    this.k++;
  }

  private seq(): YamlValue[] {
    this.k++;
    const out: YamlValue[] = [];
    this.skipSpaces();
    if (this.t[this.k] === ']') {
      this.k++;
      return out;
    }
    for (;;) {
      out.push(this.value(true));
      this.skipSpaces();
      if (this.t[this.k] === ',') {
        this.k++;
        continue;
      }
      this.expect(']');
      return out;
    }
  }

  private map(): { [key: string]: YamlValue } {
    this.k++;
    const out: { [key: string]: YamlValue } = Object.create(null);
    this.skipSpaces();
    if (this.t[this.k] === '}') {
      this.k++;
      return {};
    }
    for (;;) {
      const key = this.value(true);
      if (typeof key === 'object' && key !== null) this.p.fail(this.no, 'flow mapping keys must be scalars');
      this.expect(':');
      const k = String(key);
      if (Object.hasOwn(out, k)) this.p.fail(this.no, `duplicate key ${JSON.stringify(k)}`);
      out[k] = this.value(true);
      this.skipSpaces();
      if (this.t[this.k] === ',') {
        this.k++;
        continue;
      }
      this.expect('}');
      return { ...out };
    }
  }
}

/** Strip a comment (`#` at the start or after a space, outside quotes). */
function stripComment(text: string): string {
  let q: string | undefined;
  for (let k = 0; k < text.length; k++) {
    const c = text[k];
    if (q) {
      if (c === '\\' && q === '"') k++;
      else if (c === q) q = undefined;
    } else if (c === '"' || c === "'") {
      if (k === 0 || /[\s:[{,-]/.test(text[k - 1]!)) q = c;
    } else if (c === '#' && (k === 0 || text[k - 1] === ' ')) return text.slice(0, k);
  }
  return text;
}

/**
 * Parse a YAML document of the supported subset. `source` names the file in errors (ERR_CONFIG with
 * `file:line: what`).
 */
export function parseYaml(text: string, source = '<yaml>'): YamlValue {
  const lines: Line[] = [];
  let started = false;
  const raw = text.replace(/^\uFEFF/, '').split(/\r?\n/);
  for (let n = 0; n < raw.length; n++) {
    const no = n + 1;
    const full = raw[n]!;
    const lead = /^[ \t]*/.exec(full)![0];
    if (lead.includes('\t') && full.trim() !== '') {
      throw new TapnetError('ERR_CONFIG', `${source}:${no}: tabs are not allowed in indentation`);
    }
    const body = stripComment(full.slice(lead.length)).trimEnd();
    if (body === '') continue;
    if (lead.length === 0 && (body === '---' || body.startsWith('--- '))) {
      if (started || lines.length)
        throw new TapnetError('ERR_CONFIG', `${source}:${no}: only one document is allowed`);
      started = true;
      if (body !== '---')
        throw new TapnetError('ERR_CONFIG', `${source}:${no}: put the document on the lines after ---`);
      continue;
    }
    if (lead.length === 0 && body === '...') break;
    if (lead.length === 0 && body.startsWith('%'))
      throw new TapnetError('ERR_CONFIG', `${source}:${no}: directives are not supported`);
    lines.push({ no, indent: lead.length, text: body });
  }
  return new Parser(lines, source).document();
}

/**
 * A small validator for the Swagger 2.0 schema subset Firecracker's API definitions use: $ref, object
 * (required, properties, additionalProperties), array (items), string (enum), integer (minimum, maximum,
 * int32/int64), boolean. Objects are closed: a key the schema does not name is an error, as Firecracker's
 * deserializer (serde `deny_unknown_fields`) refuses it. Pure.
 */
import type { SwaggerSchema } from './firecracker-api.js';

/** One violation: where (a JSON path like `network-interfaces[0].rx_rate_limiter.bandwidth.size`) and what. */
export interface SchemaViolation {
  path: string;
  message: string;
}

const INT_RANGES: Record<string, [number, number]> = {
  int32: [-(2 ** 31), 2 ** 31 - 1],
  int64: [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER],
};

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Check `value` against `schema` (resolving `#/definitions/X` in `definitions`); every violation is listed. */
export function validateSwagger(
  value: unknown,
  schema: SwaggerSchema,
  definitions: Readonly<Record<string, SwaggerSchema>>,
  path = '$',
): SchemaViolation[] {
  const out: SchemaViolation[] = [];
  const visit = (v: unknown, s: SwaggerSchema, p: string): void => {
    if (s.$ref !== undefined) {
      const name = s.$ref.replace(/^#\/definitions\//, '');
      const def = definitions[name];
      if (!def) {
        out.push({ path: p, message: `schema has no definition ${name}` });
        return;
      }
      visit(v, def, p);
      return;
    }
    const type = s.type ?? (s.properties ? 'object' : undefined);
    switch (type) {
      case 'object': {
        if (!isPlainObject(v)) {
          out.push({ path: p, message: 'must be an object' });
          return;
        }
        for (const k of s.required ?? [])
          if (!(k in v)) out.push({ path: `${p}.${k}`, message: 'is required' });
        for (const [k, val] of Object.entries(v)) {
          const prop = s.properties?.[k] ?? s.additionalProperties;
          if (!prop) out.push({ path: `${p}.${k}`, message: 'is not a known field' });
          else visit(val, prop, `${p}.${k}`);
        }
        return;
      }
      case 'array':
        if (!Array.isArray(v)) {
          out.push({ path: p, message: 'must be an array' });
          return;
        }
        if (s.items) for (const [i, item] of v.entries()) visit(item, s.items, `${p}[${i}]`);
        return;
      case 'string':
        if (typeof v !== 'string') out.push({ path: p, message: 'must be a string' });
        else if (s.enum && !s.enum.includes(v))
          out.push({ path: p, message: `must be one of ${s.enum.join(', ')}` });
        return;
      case 'integer': {
        if (typeof v !== 'number' || !Number.isInteger(v)) {
          out.push({ path: p, message: 'must be an integer' });
          return;
        }
        const [lo, hi] = INT_RANGES[s.format ?? 'int64'] ?? INT_RANGES.int64!;
        const min = Math.max(lo, s.minimum ?? lo);
        const max = Math.min(hi, s.maximum ?? hi);
        if (v < min || v > max) out.push({ path: p, message: `must be from ${min} to ${max}` });
        return;
      }
      case 'boolean':
        if (typeof v !== 'boolean') out.push({ path: p, message: 'must be a boolean' });
        return;
      default:
        // No type: anything goes (Firecracker's schema has none such in the config subset).
        return;
    }
  };
  visit(value, schema, path);
  return out;
}

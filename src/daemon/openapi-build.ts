/** The small builders every part of the OpenAPI document uses (openapi.ts, openapi-stats.ts, openapi-policy.ts). */

export type Json = Record<string, unknown>;

export const ref = (name: string): Json => ({ $ref: `#/components/schemas/${name}` });
export const str = (description?: string): Json => ({
  type: 'string',
  ...(description ? { description } : {}),
});
export const int = (description?: string): Json => ({
  type: 'integer',
  ...(description ? { description } : {}),
});
export const time = (description?: string): Json => ({ ...str(description), format: 'date-time' });
export const arr = (items: Json): Json => ({ type: 'array', items });
export const obj = (
  properties: Record<string, Json>,
  required: string[] = [],
  description?: string,
): Json => ({
  type: 'object',
  properties,
  ...(required.length ? { required } : {}),
  ...(description ? { description } : {}),
});
export const nullable = (schema: Json, description: string): Json => ({
  oneOf: [schema, { type: 'null' }],
  description,
});

/** A JSON response. */
export const json = (schema: Json, description: string): Json => ({
  description,
  content: { 'application/json': { schema } },
});
/** An error response (the Error schema). */
export const error = (description: string): Json => json(ref('Error'), description);

export const VM_ID_SCHEMA: Json = { type: 'string', pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$' };
/** The `{vmId}` path parameter. */
export const vmId: Json = {
  name: 'vmId',
  in: 'path',
  required: true,
  description: 'VM id: 1-128 characters of A-Z a-z 0-9 _ . -',
  schema: VM_ID_SCHEMA,
};

/**
 * HTTP plumbing for the API: JSON responses, errors as `{code, message, details?}` with a status chosen
 * by the error's code (never a stack trace), bounded body reading, and request-body validation.
 */
import type { IncomingMessage, ServerResponse } from 'node:http';
import type { z } from 'zod';
import { type ErrorCode, TapnetError, toTapnetError } from '../errors.js';

/** HTTP status for each error code; anything else is 500. Documented in docs/API.md. */
export const HTTP_STATUS: Partial<Record<ErrorCode, number>> = {
  ERR_INVALID_ARGUMENT: 400,
  ERR_CONFIG: 400,
  ERR_NOT_FOUND: 404,
  ERR_NETNS_NOT_FOUND: 404,
  ERR_LINK_NOT_FOUND: 404,
  ERR_CONFLICT: 409,
  ERR_IPAM_CONFLICT: 409,
  ERR_IPAM_EXHAUSTED: 507,
  ERR_CAPACITY: 507,
  ERR_PERMISSION_DENIED: 403,
  ERR_UNSUPPORTED_PLATFORM: 501,
  ERR_ABORTED: 503,
  ERR_UNAVAILABLE: 503,
  ERR_TIMEOUT: 504,
};

/** Seconds a client should wait before retrying an ERR_UNAVAILABLE (the `Retry-After` header). */
export const RETRY_AFTER_SECONDS = 1;

/** An error with an explicit HTTP status (401, 405, 413, 415, 503 while draining). */
export class HttpError extends TapnetError {
  constructor(
    readonly status: number,
    code: ErrorCode,
    message: string,
    details?: Record<string, unknown>,
  ) {
    super(code, message, details ? { details } : {});
  }
}

/** The status for an error. */
export function statusFor(e: TapnetError): number {
  return e instanceof HttpError ? e.status : (HTTP_STATUS[e.code] ?? 500);
}

/** Write a JSON response. */
export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  headers: Record<string, string> = {},
): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, {
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(text),
    ...headers,
  });
  res.end(text);
}

/** Write an error response; returns the TapnetError and status written. */
export function sendError(res: ServerResponse, e: unknown): { error: TapnetError; status: number } {
  const error = toTapnetError(e);
  const status = statusFor(error);
  if (!res.headersSent) {
    const headers: Record<string, string> = {};
    if (status === 401) headers['www-authenticate'] = 'Bearer realm="tapnet"';
    if (status === 503) headers.connection = 'close';
    if (error.code === 'ERR_UNAVAILABLE') headers['retry-after'] = String(RETRY_AFTER_SECONDS);
    sendJson(res, status, publicError(error), headers);
  } else res.destroy();
  return { error, status };
}

/** The JSON body of an error: `{code, message, errno?, syscall?, extack?, details?}` without causes or stacks. */
export function publicError(e: TapnetError): Record<string, unknown> {
  return JSON.parse(JSON.stringify(e.toJSON())) as Record<string, unknown>;
}

/** Read the body (at most `limit` bytes); an empty body is undefined. Checks the content type. */
export async function readJsonBody(req: IncomingMessage, limit: number): Promise<unknown> {
  const declared = Number(req.headers['content-length'] ?? 0);
  if (declared > limit)
    throw new HttpError(413, 'ERR_INVALID_ARGUMENT', `request body larger than ${limit} bytes`);
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > limit)
      throw new HttpError(413, 'ERR_INVALID_ARGUMENT', `request body larger than ${limit} bytes`);
    chunks.push(chunk as Buffer);
  }
  if (size === 0) return undefined;
  const type = String(req.headers['content-type'] ?? '')
    .split(';')[0]!
    .trim()
    .toLowerCase();
  if (type !== 'application/json') {
    throw new HttpError(
      415,
      'ERR_INVALID_ARGUMENT',
      `request body must be application/json, not ${JSON.stringify(type || 'unspecified')}`,
    );
  }
  try {
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  } catch (e) {
    throw new TapnetError('ERR_INVALID_ARGUMENT', `request body is not valid JSON: ${(e as Error).message}`);
  }
}

/** Validate a parsed body with a zod schema; 400 naming every bad field. */
export function validateBody<T>(schema: z.ZodType<T>, body: unknown): T {
  const r = schema.safeParse(body ?? {});
  if (r.success) return r.data;
  const issues = r.error.issues.flatMap((i) =>
    i.code === 'unrecognized_keys'
      ? i.keys.map((k) => ({ field: [...i.path, k].join('.'), message: 'unknown field' }))
      : [{ field: i.path.join('.') || '(body)', message: i.message }],
  );
  throw new TapnetError(
    'ERR_INVALID_ARGUMENT',
    `invalid request body: ${issues.map((i) => `${i.field}: ${i.message}`).join('; ')}`,
    {
      details: { issues },
    },
  );
}

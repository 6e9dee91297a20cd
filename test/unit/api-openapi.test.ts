/**
 * The OpenAPI document: the copy in the repository is what the daemon serves, every route is documented
 * (and nothing else), and the request schema is the one the daemon validates with.
 */
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { buildOpenApi, VERSION } from '../../src/daemon/openapi.js';
import { routeTable } from '../../src/daemon/routes.js';
import { ensureBodySchema } from '../../src/daemon/schemas.js';
import { ERROR_CODES } from '../../src/errors.js';

const repo = join(dirname(fileURLToPath(import.meta.url)), '../../..');

describe('OpenAPI document', () => {
  const doc = buildOpenApi() as {
    paths: Record<string, Record<string, unknown>>;
    components: { schemas: Record<string, Record<string, unknown>> };
    info: { version: string };
  };

  it('docs/openapi.json is the document the daemon serves (regenerate: node dist/src/daemon/openapi.js > docs/openapi.json)', () => {
    const kept = JSON.parse(readFileSync(join(repo, 'docs/openapi.json'), 'utf8'));
    assert.deepEqual(kept, JSON.parse(JSON.stringify(doc)));
    assert.equal(doc.info.version, JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')).version);
    assert.equal(VERSION, doc.info.version);
  });

  it('documents every route and nothing else', () => {
    const documented = Object.entries(doc.paths)
      .flatMap(([path, ops]) =>
        Object.keys(ops)
          .filter((k) => k !== 'parameters')
          .map((m) => `${m.toUpperCase()} ${path}`),
      )
      .sort();
    const served = routeTable()
      .filter((r) => r.path !== '/openapi.json')
      .map((r) => `${r.method} ${r.path}`)
      .sort();
    assert.deepEqual(documented, served);
  });

  it('the request body schema is the validator’s, and errors list every code', () => {
    const req = doc.components.schemas.EnsureRequest!;
    assert.equal(req.additionalProperties, false);
    assert.deepEqual(
      Object.keys(req.properties as object).sort(),
      Object.keys(ensureBodySchema.shape).sort(),
    );
    const code = (doc.components.schemas.Error!.properties as Record<string, { enum: string[] }>).code!;
    assert.deepEqual(code.enum, Object.keys(ERROR_CODES));
  });
});

/**
 * Hostile inputs shared by the fuzz and security suites: VM ids and names that try path traversal,
 * separators, NUL, overlong names, invisible and look-alike unicode, shell metacharacters; JSON that is
 * huge, deeply nested or of the wrong type.
 */

/** VM ids / names that must be refused wherever a path, a link name or a namespace is built from them. */
export const HOSTILE_IDS: readonly string[] = [
  '',
  '.',
  '..',
  '../../etc',
  '../../../../etc/passwd',
  '/etc/passwd',
  'a/b',
  'a\\b',
  'vm/..',
  'vm..',
  '..vm',
  'vm\0x',
  '\0',
  'vm\n',
  ' vm',
  'vm ',
  '-rf',
  '_vm',
  '.hidden',
  'a'.repeat(129),
  'a'.repeat(4096),
  'vm\u2024', // one dot leader (looks like ".")
  '\u2025', // two dot leader (looks like "..")
  'vm\u2010x', // unicode hyphen
  'ｖｍ', // fullwidth
  'vm\u200b', // zero-width space
  'vm\u202e1', // right-to-left override
  'v\u0430', // Cyrillic a
  'vm;rm -rf /',
  'vm$(id)',
  'vm`id`',
  'vm|id',
  'vm&&id',
  'vm*',
  'vm?',
  '%2e%2e%2f',
  'vm%00',
  'vm:1',
  '@vm',
  '$vm',
];

/** Interface names the kernel or tapnet must refuse (16+ bytes, separators, …). */
export const HOSTILE_IFNAMES: readonly string[] = [
  '',
  '.',
  '..',
  'a'.repeat(16),
  'ä'.repeat(8), // 16 bytes in UTF-8
  'eth0/1',
  'eth0:1',
  'eth 0',
  'eth0\0',
  'eth\n0',
  'ｅｔｈ0',
];

/** A JSON text nested `depth` levels deep. */
export function deepJson(depth: number, open = '[', close = ']'): string {
  return open.repeat(depth) + close.repeat(depth);
}

/** JSON values of every wrong type for a field that wants an object or a string. */
export const WRONG_TYPES: readonly unknown[] = [
  null,
  true,
  false,
  0,
  -1,
  1.5,
  Number.MAX_SAFE_INTEGER,
  '',
  'x',
  [],
  [1],
  {},
  { a: 1 },
];

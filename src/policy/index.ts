/**
 * Network policies: parse (strict, errors name the field), compile (merge with the network's default
 * policy, order by priority, resolve `vm:`/`network:` peers), render to nftables JSON. Re-exports only.
 */
export {
  type CompileInput,
  compilePolicy,
  isOpen,
  policyReferences,
  validateCompiledPolicy,
} from './compile.js';
export { classHash, directionRules, type PolicyTargets, ruleExpressions } from './nft.js';
export {
  formatPath,
  formatPolicy,
  mergeRanges,
  parsePolicy,
  parsePolicyJson,
  policyFieldError,
} from './parse.js';
export type * from './types.js';
export { DEFAULT_PRIORITY, MAX_PRIORITY, MIN_PRIORITY, POLICY_LIMITS } from './types.js';

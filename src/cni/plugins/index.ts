/**
 * tapnet's own CNI plugins as in-process plugin objects, for libcni's InProcessRegistry: a runtime runs
 * them without fork/exec (no Node start-up per call), with exactly the executable's behaviour — the same
 * `run` is what the standalone executable (main.ts) calls.
 */
import type { InProcessPlugin } from '../inprocess.js';
import {
  runTcRedirectTap,
  TC_REDIRECT_TAP_ALIASES,
  TC_REDIRECT_TAP_TYPE,
  TC_REDIRECT_TAP_VERSIONS,
} from './tc-redirect-tap.js';

export type { InProcessPlugin };
export { runTcRedirectTap, TC_REDIRECT_TAP_ALIASES, TC_REDIRECT_TAP_TYPE, TC_REDIRECT_TAP_VERSIONS };

/** tc-redirect-tap (alias tapnet-tc-redirect-tap): a TAP joined by tc redirects to a chained plugin's veth. */
export const tcRedirectTapPlugin: InProcessPlugin = {
  type: TC_REDIRECT_TAP_TYPE,
  aliases: [...TC_REDIRECT_TAP_ALIASES],
  supportedVersions: [...TC_REDIRECT_TAP_VERSIONS],
  run: (command, env, stdin) => runTcRedirectTap(command, env, stdin),
};

/** Every plugin tapnet implements in-process. */
export const inProcessPlugins: readonly InProcessPlugin[] = [tcRedirectTapPlugin];

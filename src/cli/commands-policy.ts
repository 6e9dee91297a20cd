/**
 * `tapnet policy set <vmId> --file policy.json`, `tapnet policy get <vmId> [--json]`,
 * `tapnet policy rm <vmId>`: a VM's firewall policy, live, through the daemon or in-process.
 */
import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { TapnetError } from '../errors.js';
import { parsePolicyJson } from '../policy/parse.js';
import { globals, withApi } from './context.js';
import { printJson } from './output.js';

function need<T>(f: T | undefined, what: string): T {
  if (!f) throw new TapnetError('ERR_NOT_FOUND', `this tapnet service does not offer ${what}`);
  return f;
}

export function addPolicyCommand(program: Command): void {
  const policy = program
    .command('policy')
    .description("a VM's firewall policy: set (live), get, rm (docs/POLICY.md)")
    .addHelpText(
      'after',
      `
Examples:
  tapnet policy set vm1 --file web.json     {"default":"deny","rules":[{"direction":"ingress","protocol":"tcp","ports":[80,443],"action":"allow"}]}
  tapnet policy get vm1 --json
  tapnet policy rm vm1                      its network's default policy stays`,
    );
  policy
    .command('set')
    .description('set the policy of a VM, live (established flows that stay allowed keep going)')
    .argument('<vmId>')
    .requiredOption('--file <file>', 'the policy document (JSON); - for standard input')
    .option('--json', "print the VM's NetworkInfo as JSON")
    .action(async (vmId: string, o: { file: string }, cmd: Command) => {
      let text: string;
      try {
        text = readFileSync(o.file === '-' ? 0 : o.file, 'utf8');
      } catch (e) {
        throw new TapnetError('ERR_INVALID_ARGUMENT', `cannot read ${o.file}: ${(e as Error).message}`);
      }
      // Validated here too, so a bad document fails before any daemon call, naming the field.
      parsePolicyJson(text);
      const doc = JSON.parse(text) as Record<string, unknown>;
      const info = await withApi(cmd, ({ api }) => need(api.setPolicy, 'policies').call(api, vmId, doc));
      if (globals(cmd).json) printJson(info);
    });
  policy
    .command('get')
    .description("print a VM's own policy")
    .argument('<vmId>')
    .option('--json', 'JSON (the default output is JSON too)')
    .action(async (vmId: string, _o: unknown, cmd: Command) => {
      const doc = await withApi(cmd, ({ api }) => need(api.getPolicy, 'policies').call(api, vmId));
      printJson(doc ?? null);
    });
  policy
    .command('rm')
    .description("remove a VM's own policy (its network's default policy stays)")
    .argument('<vmId>')
    .action(async (vmId: string, _o: unknown, cmd: Command) => {
      await withApi(cmd, ({ api }) => need(api.setPolicy, 'policies').call(api, vmId, null));
    });
}

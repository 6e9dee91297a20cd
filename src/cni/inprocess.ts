/**
 * In-process CNI plugins: tapnet's own plugins run inside the runtime's process (no fork/exec, no
 * 85 ms Node start-up) with exactly the semantics of the executable. A plugin is chosen by the `type`
 * a conflist names; every other type is exec'd from the plugin path as libcni does.
 */
import { invalidArgument } from '../errors.js';

/** The verbs of the CNI protocol (CNI_COMMAND). */
export type CniCommand = 'ADD' | 'DEL' | 'CHECK' | 'VERSION' | 'STATUS' | 'GC';

/**
 * A CNI plugin that runs in-process. `run` has the plugin executable's contract: `env` is the
 * environment the executable would get (CNI_COMMAND, CNI_CONTAINERID, CNI_NETNS, CNI_IFNAME, CNI_ARGS,
 * CNI_PATH plus the inherited environment), `stdin` the request configuration, and the returned
 * `stdout` is exactly what the executable would print (the result JSON, or the error JSON
 * `{cniVersion, code, msg, details}` with a non-zero `exitCode`).
 */
export interface InProcessPlugin {
  type: string;
  aliases?: string[];
  supportedVersions: string[];
  run(
    command: 'ADD' | 'DEL' | 'CHECK' | 'VERSION' | 'STATUS' | 'GC',
    env: Record<string, string>,
    stdin: Buffer,
  ): Promise<{ stdout: Buffer; exitCode: number }>;
}

const TYPE_RE = /^[A-Za-z0-9][A-Za-z0-9_.+-]*$/;

/** The in-process plugins a runtime may call instead of exec'ing, by `type` and alias. */
export class InProcessRegistry {
  private readonly byType = new Map<string, InProcessPlugin>();

  constructor(plugins: Iterable<InProcessPlugin> = []) {
    for (const p of plugins) this.register(p);
  }

  /** Register a plugin under its type and aliases; a name already taken is an error. */
  register(plugin: InProcessPlugin): this {
    const names = [plugin.type, ...(plugin.aliases ?? [])];
    if (!Array.isArray(plugin.supportedVersions) || plugin.supportedVersions.length === 0) {
      throw invalidArgument(
        `in-process plugin ${JSON.stringify(plugin.type)} must support at least one version`,
      );
    }
    for (const n of names) {
      if (typeof n !== 'string' || !TYPE_RE.test(n)) {
        throw invalidArgument(`in-process plugin type ${JSON.stringify(n)} is not a valid plugin name`, {
          value: n,
        });
      }
      if (this.byType.has(n))
        throw invalidArgument(`in-process plugin ${JSON.stringify(n)} is already registered`);
    }
    for (const n of names) this.byType.set(n, plugin);
    return this;
  }

  /** The plugin registered for `type` (or alias), if any. */
  get(type: string): InProcessPlugin | undefined {
    return this.byType.get(type);
  }

  /** Every registered name (types and aliases), sorted. */
  names(): string[] {
    return [...this.byType.keys()].sort();
  }
}

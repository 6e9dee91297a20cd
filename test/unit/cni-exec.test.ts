import { ExecPluginExecutor } from '../../src/cni/exec.js';
import { executorContract } from '../helpers/cni-executor-contract.js';

executorContract(
  'cni plugin executables through Node spawn() (ExecPluginExecutor)',
  (o) => new ExecPluginExecutor(o),
);

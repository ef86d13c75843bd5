/** The CLI's main() run in this process, its output captured: the CLI tests' way in, without a child process. */
import { Writable } from 'node:stream';
import { main } from '../../lib/read/cli.js';

export async function runCli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const text = { stdout: '', stderr: '' };
  const sink = (key: 'stdout' | 'stderr'): Writable => new Writable({
    write(chunk: Buffer, _enc, cb) {
      text[key] += chunk.toString();
      cb();
    },
  });
  const code = await main(args, { stdout: sink('stdout'), stderr: sink('stderr') });
  return { code, ...text };
}

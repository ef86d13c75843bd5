/**
 * A real Apache Kafka broker for the sink tests: Kafka 3.9.1 in KRaft mode (one node, broker and controller),
 * from the jars Maven resolves for test/support/kafka/pom.xml, started with `kafka.tools.StorageTool format` and
 * `kafka.Kafka` on free 127.0.0.1 ports in a temporary directory. Whatever it starts is stopped (and its
 * directory removed) by `destroy()`, at exit, and by a watchdog when this process dies.
 *
 * `startKafka()` resolves to null with the reason when Java, Maven or the jars cannot be had: the tests then say
 * why they skip. The first run downloads the jars into ~/.m2 (a minute or two); later runs start in seconds.
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const POM_DIR = join(__dirname, 'kafka');

export interface KafkaBroker {
  /** `127.0.0.1:<port>` */
  broker: string;
  /** Stops the broker (its data kept): clients get connection errors until `start()`. */
  stop(): Promise<void>;
  start(): Promise<void>;
  destroy(): Promise<void>;
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host: '127.0.0.1', port });
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/** The broker's classpath, or the reason there is none. */
async function classpath(): Promise<{ cp: string } | { reason: string }> {
  try {
    await run('java', ['-version']);
  } catch {
    return { reason: 'no java on PATH' };
  }
  const out = join(mkdtempSync(join(tmpdir(), 'ka-kafka-cp-')), 'classpath.txt');
  try {
    await run('mvn', ['-q', '-B', 'dependency:build-classpath', `-Dmdep.outputFile=${out}`], { cwd: POM_DIR, timeout: 8 * 60_000 });
    const cp = readFileSync(out, 'utf8').trim();
    if (!cp.includes('kafka_2.13')) return { reason: 'maven resolved no kafka_2.13 jar' };
    return { cp };
  } catch (err) {
    const e = err as { code?: string; stderr?: string; stdout?: string; message: string };
    if (e.code === 'ENOENT') return { reason: 'no mvn on PATH' };
    return { reason: `maven could not resolve org.apache.kafka:kafka_2.13:3.9.1 (${(e.stdout || e.stderr || e.message).split('\n').filter(Boolean).slice(-2).join(' ')})` };
  } finally {
    rmSync(join(out, '..'), { recursive: true, force: true });
  }
}

let cleanups: (() => void)[] = [];
process.once('exit', () => {
  for (const c of cleanups) c();
  cleanups = [];
});

/** Starts a broker; null (with `reason` filled in) when Java, Maven or the jars are missing. */
export async function startKafka(why: { reason?: string } = {}): Promise<KafkaBroker | null> {
  const found = await classpath();
  if ('reason' in found) {
    why.reason = found.reason;
    return null;
  }
  const dir = mkdtempSync(join(tmpdir(), 'ka-kafka-'));
  const [port, controllerPort] = [await freePort(), await freePort()];
  const props = join(dir, 'server.properties');
  writeFileSync(props, [
    'process.roles=broker,controller',
    'node.id=1',
    `controller.quorum.voters=1@127.0.0.1:${controllerPort}`,
    `listeners=PLAINTEXT://127.0.0.1:${port},CONTROLLER://127.0.0.1:${controllerPort}`,
    `advertised.listeners=PLAINTEXT://127.0.0.1:${port}`,
    'controller.listener.names=CONTROLLER',
    'inter.broker.listener.name=PLAINTEXT',
    'listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT',
    `log.dirs=${join(dir, 'data')}`,
    'num.partitions=3',
    'offsets.topic.replication.factor=1',
    'offsets.topic.num.partitions=1',
    'transaction.state.log.replication.factor=1',
    'transaction.state.log.min.isr=1',
    'group.initial.rebalance.delay.ms=0',
    'auto.create.topics.enable=true',
    'log.flush.interval.messages=1',
    '',
  ].join('\n'));
  // Small and quick to start: the machine is shared, the broker holds a few thousand messages.
  const jvm = ['-Xms128m', '-Xmx384m', '-XX:+UseSerialGC', '-XX:TieredStopAtLevel=1', '-Xshare:auto', '-Dlog4j.configuration=none',
    '-Dorg.slf4j.simpleLogger.defaultLogLevel=warn', '-cp', found.cp];
  // A cluster id is 16 random bytes in URL-safe base64 without padding. Given as `--cluster-id=<id>`: one id in 64
  // starts with '-', which the tool's parser took for an option (seen failing CI).
  const clusterId = randomBytes(16).toString('base64url');
  await run('java', [...jvm, 'kafka.tools.StorageTool', 'format', `--cluster-id=${clusterId}`, '-c', props], { timeout: 120_000 });

  let child: ChildProcess | null = null;
  let log = '';
  const start = async (): Promise<void> => {
    if (child !== null && child.exitCode === null) return;
    // The watchdog: when our end of stdin closes (we exit, however we exit), the broker is killed.
    const script = '"$@" </dev/null & pid=$!; trap "kill $pid 2>/dev/null" TERM INT; cat >/dev/null; kill $pid 2>/dev/null; wait $pid';
    const c = spawn('sh', ['-c', script, 'kafka', 'java', ...jvm, 'kafka.Kafka', props], { stdio: ['pipe', 'ignore', 'pipe'] });
    c.stderr?.on('data', (d: Buffer) => {
      log = (log + d.toString()).slice(-4000);
    });
    child = c;
    const deadline = Date.now() + 90_000;
    while (Date.now() < deadline) {
      if (c.exitCode !== null) throw new Error(`kafka exited with ${c.exitCode}: ${log}`);
      if (await portOpen(port)) return;
      await new Promise((r) => setTimeout(r, 200));
    }
    throw new Error(`kafka did not listen within 90 s: ${log}`);
  };
  const stop = async (): Promise<void> => {
    const c = child;
    child = null;
    if (c === null || c.exitCode !== null) return;
    const gone = new Promise<void>((r) => c.once('exit', () => r()));
    c.stdin?.end();
    c.kill('SIGTERM');
    await Promise.race([gone, new Promise((r) => setTimeout(r, 15_000))]);
    if (c.exitCode === null) c.kill('SIGKILL');
    // The port is free again when the broker is gone.
    for (let i = 0; i < 50 && (await portOpen(port)); i++) await new Promise((r) => setTimeout(r, 100));
  };
  const cleanup = (): void => {
    try {
      (child as ChildProcess | null)?.kill('SIGKILL');
    } catch {
      // gone
    }
    if (existsSync(dir)) rmSync(dir, { recursive: true, force: true });
  };
  cleanups.push(cleanup);
  await start();
  return {
    broker: `127.0.0.1:${port}`,
    stop,
    start,
    destroy: async () => {
      await stop();
      cleanup();
      cleanups = cleanups.filter((c) => c !== cleanup);
    },
  };
}

/**
 * The client libraries of the OTLP and Kafka sinks are optional dependencies: loaded when such a sink is
 * created, never when the package is imported, so an app without them (or on a platform where they did not
 * install) only learns of them when it asks for that sink.
 */
export function loadOptional<T>(name: string, forWhat: string): T {
  try {
    return require(name) as T;
  } catch (err) {
    const e = err as { code?: string; message?: string };
    if (e.code === 'MODULE_NOT_FOUND' && String(e.message).includes(name)) {
      throw new Error(`koa-audit: ${forWhat} needs the package ${name} (npm install ${name})`);
    }
    throw err;
  }
}

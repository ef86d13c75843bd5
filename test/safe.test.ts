import { expect } from 'chai';
import mongoose from 'mongoose';
import { createRedactor, REDACTED } from '../lib/core/redact.js';
import { capString, CIRCULAR, escapeKey, toStored, TRUNCATED, unescapeKey } from '../lib/core/safe.js';
import { useFixture } from './support/helpers.js';

const { ObjectId, Decimal128, Binary, Long } = mongoose.mongo;

describe('safe stored form', () => {
  const fx = useFixture('safe');

  /** Stores `value` in the real server and reads it back. */
  async function roundTrip(value: unknown): Promise<unknown> {
    const coll = fx.conn.collection('roundtrip');
    const _id = new ObjectId();
    await coll.insertOne({ _id, v: toStored(value) } as never);
    const doc = await coll.findOne({ _id });
    return (doc as { v: unknown } | null)?.v;
  }

  const cases: [string, unknown, unknown][] = [
    ['a Date as its ISO string', new Date('2026-01-02T03:04:05.678Z'), '2026-01-02T03:04:05.678Z'],
    ['an invalid Date', new Date('nope'), 'Invalid Date'],
    ['an ObjectId as hex', new ObjectId('65f000000000000000000001'), '65f000000000000000000001'],
    ['a Decimal128 as its decimal string', Decimal128.fromString('12345.6789000000000001'), '12345.6789000000000001'],
    ['a Long as its exact string', Long.fromString('9223372036854775807'), '9223372036854775807'],
    ['a Buffer as base64', Buffer.from([0, 1, 2, 254, 255]), 'AAEC/v8='],
    ['a BSON Binary as base64', new Binary(Buffer.from('hi')), 'aGk='],
    ['a typed array as base64', new Uint8Array([104, 105]), 'aGk='],
    ['a Map as an object', new Map<string, unknown>([['a', 1], ['b.c', 2]]), { a: 1, 'b%2Ec': 2 }],
    ['a Set as an array', new Set([1, 2]), [1, 2]],
    ['a BigInt as its decimal string', 12345678901234567890n, '12345678901234567890'],
    ['undefined as null', { a: undefined }, { a: null }],
    ['NaN and infinities as strings', [NaN, Infinity, -Infinity], ['NaN', 'Infinity', '-Infinity']],
    ['keys with dots and a leading $ escaped', { 'a.b': 1, $where: 2, '100%': 3, 'x$': 4 }, { 'a%2Eb': 1, '%24where': 2, '100%': 3, x$: 4 }],
    ['a NUL in a key escaped', { 'a\0b': 1 }, { 'a%00b': 1 }],
    ['a lone surrogate replaced', 'a\uD800b', 'a\uFFFDb'],
    ['a function by name', function namedFn() {}, '[Function namedFn]'],
    ['an Error as name and message', new TypeError('bad'), { name: 'TypeError', message: 'bad' }],
  ];
  for (const [name, input, expected] of cases) {
    it(`stores ${name}`, async () => {
      expect(toStored(input)).to.deep.equal(expected);
      expect(await roundTrip(input)).to.deep.equal(expected);
    });
  }

  it('stores a cyclic object with the cycle marked, and keeps shared (non-cyclic) references', async () => {
    const shared = { s: 1 };
    const o: Record<string, unknown> = { name: 'root', left: shared, right: shared };
    o.self = o;
    const expected = { name: 'root', left: { s: 1 }, right: { s: 1 }, self: CIRCULAR };
    expect(toStored(o)).to.deep.equal(expected);
    expect(await roundTrip(o)).to.deep.equal(expected);
  });

  it('caps the depth of deeply nested values', async () => {
    let deep: Record<string, unknown> = { leaf: true };
    for (let i = 0; i < 200; i++) deep = { d: deep };
    let v = (await roundTrip(deep)) as Record<string, unknown> | string;
    let depth = 0;
    while (typeof v === 'object') {
      v = (v as Record<string, unknown>).d as Record<string, unknown> | string;
      depth++;
    }
    expect(v).to.equal(TRUNCATED);
    expect(depth).to.equal(12);
  });

  it('caps strings, without splitting a surrogate pair', async () => {
    const long = 'x'.repeat(10_000);
    const stored = (await roundTrip(long)) as string;
    expect(stored.length).to.be.at.most(4096);
    expect(stored.startsWith('x'.repeat(4000))).to.equal(true);
    expect(stored).to.match(/…\[truncated 5936 chars\]$/);
    const emoji = `${'a'.repeat(39)}😀${'t'.repeat(50)}`; // the pair sits across the cut at 40
    const cut = capString(emoji, 72);
    expect(cut.startsWith(`${'a'.repeat(39)}…`)).to.equal(true);
    expect(cut.isWellFormed()).to.equal(true);
  });

  it('caps huge buffers before encoding them', () => {
    const stored = toStored(Buffer.alloc(10_000_000)) as string;
    expect(stored.length).to.be.below(4200);
    expect(stored.length).to.be.at.most(4096);
    expect(stored).to.match(/truncated 9996952 bytes\]$/);
  });

  it('caps the number of items and keys', async () => {
    const arr = Array.from({ length: 5000 }, (_, i) => i);
    const stored = (await roundTrip(arr)) as unknown[];
    expect(stored).to.have.length(1000);
    expect(stored[999]).to.equal(TRUNCATED);
    const obj = Object.fromEntries(arr.map((i) => [`k${i}`, i]));
    expect(Object.keys(toStored(obj) as object)).to.have.length(1000);
  });

  it('unescapeKey reverses escapeKey', () => {
    for (const k of ['a.b', '$x', '100%', '$a.b%c', 'plain', 'a\0b']) expect(unescapeKey(escapeKey(k))).to.equal(k);
  });

  it('is idempotent: storing a stored value changes nothing', () => {
    let deep: Record<string, unknown> = { leaf: true };
    for (let i = 0; i < 30; i++) deep = { d: deep };
    const nasty = {
      'a.b': { $c: 'x'.repeat(9000) }, list: Array.from({ length: 3000 }, (_, i) => i), deep, n: NaN, d: new Date(0),
      keys: Object.fromEntries(Array.from({ length: 2000 }, (_, i) => [`k${i}`, i])), password: 'p', big: Buffer.alloc(9000),
    };
    const once = toStored(nasty, createRedactor());
    expect(toStored(once, createRedactor())).to.deep.equal(once);
  });

  it('stores a mongoose document as its data', async () => {
    const M = fx.conn.model('SafeDoc', new mongoose.Schema({ name: String, at: Date }));
    const d = new M({ name: 'n', at: new Date('2026-01-01T00:00:00Z') });
    expect(toStored(d)).to.deep.equal({ name: 'n', at: '2026-01-01T00:00:00.000Z', _id: d._id.toHexString() });
  });

  it('never throws on hostile objects', () => {
    const hostile = new Proxy({}, { ownKeys: () => { throw new Error('boom'); } });
    const getterBomb = Object.defineProperty({}, 'x', { enumerable: true, get() { throw new Error('boom'); } });
    expect(toStored({ hostile, ok: 1 })).to.deep.equal({ hostile: '[Unreadable: boom]', ok: 1 });
    // A throwing getter spoils its own entry, not its siblings (issue 11, item 2: record what can be read).
    expect(toStored({ getterBomb })).to.deep.equal({ getterBomb: { x: '[Unreadable: boom]' } });
    const partly = Object.defineProperty({ a: 1 }, 'b', { enumerable: true, get() { throw new Error('no b'); } });
    expect(toStored(partly)).to.deep.equal({ a: 1, b: '[Unreadable: no b]' });
    const noMessage = new Error('x');
    Object.defineProperty(noMessage, 'message', { get() { throw new Error('nested'); } });
    const badGetter = Object.defineProperty({}, 'y', { enumerable: true, get() { throw noMessage; } });
    expect(toStored(badGetter)).to.deep.equal({ y: '[Unreadable: error]' });
  });
});

describe('redaction', () => {
  const r = createRedactor(['pin', 'X-Internal']);

  it('redacts built-in keys case-insensitively, and across - / _ / camelCase spellings', () => {
    for (const k of ['password', 'PASSWORD', 'Authorization', 'access_token', 'accessToken', 'Access-Token', 'set-cookie', 'SetCookie', 'client_secret', 'cvv', 'SSN', 'api_key', 'apiKey']) {
      expect(r.isSecret(k), k).to.equal(true);
    }
  });

  it('redacts keys that contain a strong word (newPassword, x-api-key)', () => {
    for (const k of ['newPassword', 'password_confirmation', 'x-api-key', 'githubToken', 'dbSecret']) expect(r.isSecret(k), k).to.equal(true);
  });

  it('redacts a dotted key when one of its segments is secret (query strings, form fields, mongo paths)', () => {
    for (const k of ['user.ssn', 'creds.PIN', 'a.b.cvv']) expect(r.isSecret(k), k).to.equal(true);
    for (const k of ['user.name', 'a.b.c']) expect(r.isSecret(k), k).to.equal(false);
    expect(r.query('user.ssn=123-45&user.name=ann', 4096)).to.equal(`user.ssn=${REDACTED}&user.name=ann`);
  });

  it('redacts the extra keys of the redact option, and leaves other keys alone', () => {
    expect(r.isSecret('PIN')).to.equal(true);
    expect(r.isSecret('x_internal')).to.equal(true);
    for (const k of ['name', 'email', 'title', 'user', 'status']) expect(r.isSecret(k), k).to.equal(false);
  });

  it('redacts at any depth and inside arrays', () => {
    const stored = toStored({ user: { name: 'a', profile: { password: 'p1' } }, list: [{ token: 't' }, { ok: 1, nested: [{ Cookie: 'c' }] }] }, r);
    expect(stored).to.deep.equal({
      user: { name: 'a', profile: { password: REDACTED } },
      list: [{ token: REDACTED }, { ok: 1, nested: [{ Cookie: REDACTED }] }],
    });
  });

  it('redacts a secret key even when its value is an object', () => {
    expect(toStored({ secret: { a: 1 } }, r)).to.deep.equal({ secret: REDACTED });
  });

  it('redacts query string parameters, including encoded names, and keeps the rest raw', () => {
    expect(r.query('a=1&password=hunter2&b=%20x', 4096)).to.equal(`a=1&password=${REDACTED}&b=%20x`);
    expect(r.query('pass%77ord=x&ACCESS_TOKEN=y&user%5Bpassword%5D=z', 4096)).to.equal(
      `pass%77ord=${REDACTED}&ACCESS_TOKEN=${REDACTED}&user%5Bpassword%5D=${REDACTED}`,
    );
    expect(r.query('flag&&x=1&=v&pin=1', 4096)).to.equal(`flag&&x=1&=v&pin=${REDACTED}`);
    expect(r.query('bad=%E0%A4%A&token=%ZZ', 4096)).to.equal(`bad=%E0%A4%A&token=${REDACTED}`);
  });

  it('caps a long query string and still redacts within it', () => {
    const q = `token=${'s'.repeat(100)}&${'a=1&'.repeat(5000)}`;
    const out = r.query(q, 1000);
    expect(out.startsWith(`token=${REDACTED}&a=1`)).to.equal(true);
    expect(out.endsWith('…[truncated]')).to.equal(true);
    expect(out.length).to.be.below(1100);
    expect(out).not.to.include('sss');
  });
});

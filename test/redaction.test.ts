/** The redactor's two judges, without a database: names by their words, and free text by its content. */
import { expect } from 'chai';
import { createRedactor, REDACTED } from '../lib/core/redact.js';
import { toStored } from '../lib/core/safe.js';
import { isCardNumber, luhn } from '../lib/core/scrub.js';
import { wordsOf } from '../lib/core/secret-names.js';

describe('redaction: names judged by their words', () => {
  const r = createRedactor();

  it('splits names at camelCase, _, -, ., spaces and brackets, and normalizes each word', () => {
    expect(wordsOf('creditCardNumber')).to.deep.equal(['credit', 'card', 'number']);
    expect(wordsOf('user[pwd]')).to.deep.equal(['user', 'pwd']);
    expect(wordsOf('api.key')).to.deep.equal(['api', 'key']);
    expect(wordsOf('api key')).to.deep.equal(['api', 'key']);
    expect(wordsOf('APIKey')).to.deep.equal(['api', 'key']);
    expect(wordsOf('X-Api-Key')).to.deep.equal(['x', 'api', 'key']);
    expect(wordsOf('recoveryCodes')).to.deep.equal(['recovery', 'code']);
    expect(wordsOf('pin2')).to.deep.equal(['pin']);
    expect(wordsOf('SESSION_ID')).to.deep.equal(['session', 'id']);
  });

  const table: [string, boolean][] = [
    // the names of the issue: in bodies and documents
    ['pin', true], ['otp', true], ['passphrase', true], ['cvc', true], ['creditCardNumber', true], ['sessionId', true],
    ['recoveryCodes', true],
    // in query strings
    ['jwt', true], ['auth', true], ['sig', true], ['signature', true], ['pan', true],
    // split names
    ['user[pwd]', true], ['api.key', true], ['api key', true], ['APIKey', true], ['x-api-key', true],
    // the old list, and names containing a strong word
    ['password', true], ['PASSWORD', true], ['passwd', true], ['pwd', true], ['secret', true], ['token', true],
    ['access_token', true], ['accessToken', true], ['Access-Token', true], ['refresh_token', true], ['id_token', true],
    ['authorization', true], ['Authorization', true], ['cookie', true], ['set-cookie', true], ['SetCookie', true],
    ['api_key', true], ['apikey', true], ['client_secret', true], ['credit_card', true], ['card_number', true],
    ['cvv', true], ['ssn', true], ['newPassword', true], ['password_confirmation', true], ['githubToken', true],
    ['dbSecret', true], ['accesstoken', true], ['mypassword', true], ['privateKey', true], ['private_key', true],
    ['user.ssn', true], ['creds.PIN', true], ['a.b.cvv', true], ['connect.sid', true], ['JSESSIONID', true],
    ['resetCode', true], ['verificationCode', true], ['backup_codes', true], ['bankAccountNumber', true], ['iban', true],
    ['totp', true], ['pin2', true], ['Bearer', true], ['passcode', true], ['credentials', true],
    // visible
    ['keyboard', false], ['monkey', false], ['tokenizer', false], ['name', false], ['email', false], ['title', false],
    ['user', false], ['status', false], ['address', false], ['sortKey', false], ['keyName', false], ['spinner', false],
    ['pinned', false], ['company', false], ['expand', false], ['panel', false], ['session_timeout', false],
    ['author', false], ['authority', false], ['signed', false], ['codec', false], ['user.name', false], ['a.b.c', false],
    ['postcode', false], ['code', false], ['country_code', false], ['monkeyKey', false], ['key', false], ['session', false],
  ];
  for (const [name, secret] of table) {
    it(`${JSON.stringify(name)} is ${secret ? 'secret' : 'visible'}`, () => {
      expect(r.isSecret(name), name).to.equal(secret);
    });
  }

  it('hides `key`, `session` and an OAuth `code` in URLs only (query strings, route parameters), not in documents', () => {
    for (const name of ['key', 'session', 'code']) {
      expect(r.isSecret(name), name).to.equal(false);
      expect(r.isSecretParam(name), name).to.equal(true);
    }
    expect(r.isSecretParam('keyboard')).to.equal(false);
    expect(r.query('code=abc&state=xyz', 4096)).to.equal(`code=${REDACTED}&state=xyz`);
    expect(toStored({ code: 'FR' }, r)).to.deep.equal({ code: 'FR' });
  });

  it('redacts every name of the issue in a query string, split names included', () => {
    const q = 'jwt=1&key=2&auth=3&sig=4&signature=5&session=6&pan=7&code=8&user[pwd]=9&user%5Bpwd%5D=10&api.key=11&api%20key=12&api+key=13&q=keyboard&tokenizer=t';
    expect(r.query(q, 4096)).to.equal(
      `jwt=${REDACTED}&key=${REDACTED}&auth=${REDACTED}&sig=${REDACTED}&signature=${REDACTED}&session=${REDACTED}&pan=${REDACTED}` +
        `&code=${REDACTED}&user[pwd]=${REDACTED}&user%5Bpwd%5D=${REDACTED}&api.key=${REDACTED}&api%20key=${REDACTED}&api+key=${REDACTED}&q=keyboard&tokenizer=t`,
    );
  });

  it('adds the redact option\'s names, split into words like any name', () => {
    const custom = createRedactor(['bankAccount', 'X-Internal']);
    for (const k of ['bankAccount', 'bank_account', 'BankAccount', 'user.bankAccount', 'x_internal']) expect(custom.isSecret(k), k).to.equal(true);
    expect(custom.isSecret('bank')).to.equal(false);
    const plugin = custom.with(['shoeSize']);
    expect(plugin.isSecret('shoe_size')).to.equal(true);
    expect(custom.isSecret('shoe_size')).to.equal(false);
  });
});

describe('redaction: value scrubbing', () => {
  const r = createRedactor();

  it('scrubs a card number that passes the Luhn check, and keeps an order number of the same length that does not', () => {
    const card = '4539578763621486';
    const order = '4539578763621487';
    expect(isCardNumber(card)).to.equal(true);
    expect(luhn(order)).to.equal(false);
    expect(r.text(`paid with ${card} today`)).to.equal(`paid with ${REDACTED} today`);
    expect(r.text(`order ${order} shipped`)).to.equal(`order ${order} shipped`);
    expect(r.text('card 4539 5787 6362 1486, thanks')).to.equal(`card ${REDACTED}, thanks`);
    expect(r.text('card 4539-5787-6362-1486 12')).to.equal(`card ${REDACTED} 12`);
    // A millisecond timestamp may pass Luhn, but no card starts with 1.
    const ts = Array.from({ length: 10 }, (_, d) => `173287000000${d}`).find(luhn) as string;
    expect(ts).to.be.a('string');
    expect(r.text(`ts=${ts}`)).to.equal(`ts=${ts}`);
    expect(toStored({ note: `card ${card}`, order }, r)).to.deep.equal({ note: `card ${REDACTED}`, order });
  });

  const cases: [string, string, string][] = [
    ['bearer token', 'Authorization: Bearer abc.def-1234567', `Authorization: Bearer ${REDACTED}`],
    ['bearer prose', 'the bearer of bad news', 'the bearer of bad news'],
    ['basic credentials', `auth Basic ${Buffer.from('bob:hunter2').toString('base64')}`, `auth Basic ${REDACTED}`],
    ['basic prose', 'Basic authentication failed', 'Basic authentication failed'],
    ['jwt', 'got eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl here', `got ${REDACTED} here`],
    ['url userinfo', 'connect mongodb://app:hunter2@db.internal:27017/x failed', `connect mongodb://${REDACTED}@db.internal:27017/x failed`],
    ['name=value', 'retry with password=hunter2&user=bob', `retry with password=${REDACTED}&user=bob`],
    ['split name=value', 'user[pwd]=hunter2; api.key=k1', `user[pwd]=${REDACTED}; api.key=${REDACTED}`],
    ['json pair', '{"otp": "123456", "pin": 1234, "name": "x"}', `{"otp": "${REDACTED}", "pin": "${REDACTED}", "name": "x"}`],
    ['inspect pair', "{ passphrase: 'open sesame', id: 'a' }", `{ passphrase: '${REDACTED}', id: 'a' }`],
    ['log pair', 'login failed, password: hunter2', `login failed, password: ${REDACTED}`],
    ['cookie header', 'Cookie: sid=abc123; theme=dark', `Cookie: sid=${REDACTED}; theme=dark`],
    ['stack', 'Error: boom\n    at f (/app/x.js:10:5)', 'Error: boom\n    at f (/app/x.js:10:5)'],
    ['user agent', 'Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0.0.0', 'Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0.0.0'],
    ['keyboard', 'keyboard=qwerty monkey=1 tokenizer: "bpe"', 'keyboard=qwerty monkey=1 tokenizer: "bpe"'],
  ];
  for (const [label, input, output] of cases) {
    it(`${label}: ${JSON.stringify(input)}`, () => {
      expect(r.text(input)).to.equal(output);
      expect(r.text(output)).to.equal(output); // idempotent
    });
  }

  it('scrubs before it caps: a secret at the cut is not left half visible', () => {
    const s = `${'x'.repeat(4090)} password=hunter2hunter2`;
    const stored = toStored(s, r) as string;
    expect(stored).not.to.include('hunter2');
  });

  it('scrubs keys too', () => {
    const stored = toStored({ 'Bearer abcdefgh12345678': 1 }, r) as Record<string, unknown>;
    expect(Object.keys(stored)).to.deep.equal([`Bearer ${REDACTED}`]);
  });

  it('takes extra patterns (a `secret` group replaces only that part) and disables built-in rules', () => {
    const custom = createRedactor([], { patterns: [/INT-[0-9]{6}/, /ref:(?<secret>[a-z]+)/] });
    expect(custom.text('ticket INT-123456, ref:abc')).to.equal(`ticket ${REDACTED}, ref:${REDACTED}`);
    const noCards = createRedactor([], { disable: ['card'] });
    expect(noCards.text('4539578763621486 password=x')).to.equal(`4539578763621486 password=${REDACTED}`);
    const none = createRedactor([], { disable: ['url', 'bearer', 'basic', 'jwt', 'pairs', 'card'] });
    expect(none.text('password=x 4539578763621486')).to.equal('password=x 4539578763621486');
    // Names are still judged: disabling value scrubbing never un-redacts a secret key.
    expect(toStored({ password: 'x' }, none)).to.deep.equal({ password: REDACTED });
  });
});

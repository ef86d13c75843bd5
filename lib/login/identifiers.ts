/**
 * `failedIdentifiers: 'hmac'`: the identifier of a failed login of an unknown user is stored as a keyed HMAC.
 *
 * People type their password into the username field; storing what they typed puts the password in the trail.
 * A keyed HMAC keeps what an investigation needs (repeated attempts with the same text group under the same
 * value, and a suspect name can be checked with `auditor.hashIdentifier(name)`) without keeping the text. Unlike
 * a plain hash, it cannot be reversed by hashing a dictionary without the key. The price: the trail no longer
 * says which names were tried; anyone holding the key can test guesses.
 */
import { createHmac } from 'node:crypto';

export const HMAC_PREFIX = 'hmac:';

/** The hashing function of a key, or null (`'plain'`). The identifier is hashed as given (no case folding). */
export function identifierHasher(key: Buffer | null): ((identifier: string | null) => string | null) | null {
  if (key === null) return null;
  return (identifier) => {
    if (identifier === null) return null;
    return HMAC_PREFIX + createHmac('sha256', key).update(identifier, 'utf8').digest('hex').slice(0, 32);
  };
}

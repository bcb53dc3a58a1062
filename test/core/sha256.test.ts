import { createHash } from 'node:crypto';
import t from 'tap';
import { sha256Hex } from '../../src/core/sha256.js';

t.test('sha256Hex agrees with node:crypto on every padding boundary and on UTF-8', async (t) => {
  const inputs = ['', 'abc', 'pod', ' (prefix)', 'web- (prefix)', 'é漢字🙂', 'x'.repeat(253)];
  for (let n = 50; n <= 130; n++) inputs.push('a'.repeat(n));
  for (const s of inputs) t.equal(sha256Hex(s), createHash('sha256').update(s, 'utf8').digest('hex'), `length ${s.length}`);
  t.equal(sha256Hex('abc'), 'ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad', 'FIPS 180-2 test vector');
});

import { expect } from 'chai';
import mongoose from 'mongoose';
import { weakWriteConcern } from '../lib/store/write-concern.js';
import { replicaSetProxy } from './support/replica-set-proxy.js';
import { useFixture } from './support/helpers.js';

describe('write concern warning', () => {
  const fx = useFixture('writer_concern');

  it('judges hello answers: weaker than majority on a replica set warns, anything else does not', () => {
    const rs = { setName: 'rs0', hosts: ['a:1', 'b:1', 'c:1'], maxWireVersion: 21 };
    expect(weakWriteConcern(rs, { w: 1 })).to.match(/w: 1 is weaker than majority on replica set "rs0"/);
    expect(weakWriteConcern(rs, { w: 0 })).to.be.a('string');
    expect(weakWriteConcern(rs, { w: 'majority' })).to.equal(null);
    expect(weakWriteConcern(rs, { w: 2 })).to.equal(null, '2 of 3 is a majority');
    expect(weakWriteConcern(rs, undefined)).to.equal(null, 'MongoDB 5.0+ defaults to majority');
    expect(weakWriteConcern({ ...rs, maxWireVersion: 9 }, undefined)).to.match(/defaults to w: 1/);
    expect(weakWriteConcern({ ...rs, hosts: ['a', 'b', 'c', 'd', 'e'] }, { w: 2 })).to.be.a('string', '2 of 5 is not');
    expect(weakWriteConcern({ maxWireVersion: 21 }, { w: 1 })).to.equal(null, 'a standalone server has no majority to ask for');
  });

  it('on this server (not a replica set, as FerretDB never is) gives no warning, even for w: 1', async function () {
    const hello = await fx.conn.db!.admin().command({ hello: 1 });
    if (typeof hello.setName === 'string') {
      // A replica set (MONGODB_URI pointing at one): then w: 1 must warn.
      expect(weakWriteConcern(hello, { w: 1 })).to.be.a('string');
      return;
    }
    const warnings: Error[] = [];
    const onWarning = (w: Error): void => {
      warnings.push(w);
    };
    process.on('warning', onWarning);
    try {
      const a = fx.auditor({ collection: 'wc_none', writeConcern: { w: 1 } });
      await a.ready();
      await new Promise((r) => setImmediate(r));
      expect(warnings.filter((w) => (w as { code?: string }).code === 'KOA_AUDIT_WEAK_WRITE_CONCERN')).to.deep.equal([]);
    } finally {
      process.off('warning', onWarning);
    }
  });

  it('a real auditor on a replica set warns once about w: 1, and not about majority', async function () {
    // The server this run uses, made to answer hello as a 3-member replica set (test/support/replica-set-proxy.ts).
    const proxy = fx.own(await replicaSetProxy(process.env.KOA_AUDIT_TEST_URI as string));
    const rsConn = fx.own(await mongoose.createConnection(proxy.uri('t_wc_rs'), { serverSelectionTimeoutMS: 5000 }).asPromise());
    const warnings: Error[] = [];
    const onWarning = (w: Error): void => {
      if ((w as { code?: string }).code === 'KOA_AUDIT_WEAK_WRITE_CONCERN') warnings.push(w);
    };
    process.on('warning', onWarning);
    try {
      const hello = await rsConn.db!.admin().command({ hello: 1 });
      expect(hello.setName).to.equal('rs-test');
      const weak = fx.auditor({ connection: rsConn, collection: 'wc_weak', writeConcern: { w: 1 } });
      const strong = fx.auditor({ connection: rsConn, collection: 'wc_strong', writeConcern: { w: 'majority' } });
      await strong.ready();
      await weak.ready();
      await weak.ready();
      await new Promise((r) => setImmediate(r));
      expect(warnings).to.have.length(1);
      expect(warnings[0].message).to.match(/w: 1 is weaker than majority on replica set "rs-test".*writeConcern: \{ w: 'majority' \}/);
    } finally {
      process.off('warning', onWarning);
    }
  });
});

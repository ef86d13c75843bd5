import { expect } from 'chai';
import Koa from 'koa';
import mongoose, { mongo, Schema, type Model } from 'mongoose';
import { byPath, useChanges } from '../support/changes.js';
import { APP_EVENTS, testDbUri } from '../support/helpers.js';

interface Account {
  _id: mongo.ObjectId;
  name?: string;
  password?: string;
  pin?: string;
  profile?: { bio?: string; apiKey?: string; pinCode?: string };
  internal?: { a?: number; b?: number };
  n?: number;
}

const ACCOUNT = {
  name: String,
  password: String,
  pin: String,
  profile: { bio: String, apiKey: String, pinCode: String },
  internal: { a: Number, b: Number },
  n: Number,
};

describe('changes: attribution and plugin options', () => {
  const fx = useChanges('changes_options');

  describe('attribution', () => {
    let Note: Model<{ text: string }>;
    before(() => {
      Note = fx.model<{ text: string }>({ text: String });
    });

    it('a write inside a real HTTP request carries its actor and request id', async () => {
      const app = new Koa();
      app.use(fx.auditor());
      app.use(async (ctx, next) => {
        if (ctx.get('x-user') !== '') ctx.state.user = { id: ctx.get('x-user'), username: 'alice' };
        await next();
      });
      app.use(async (ctx) => {
        const note = await Note.create({ text: ctx.path });
        await Note.updateOne({ _id: note._id }, { $set: { text: `${ctx.path}!` } });
        ctx.body = { id: note._id.toHexString() };
      });
      const r = await fx.listen(app);

      const res = await fetch(`${r.url}/signed`, { headers: { 'x-user': 'u-42', 'x-request-id': 'req-plugin-1' } });
      expect(res.status).to.equal(200);
      const requestId = res.headers.get('x-request-id') as string;
      expect(requestId).not.to.equal('req-plugin-1');
      const { id } = (await res.json()) as { id: string };
      const events = await fx.events({ model: Note.modelName, documentId: id });
      expect(events.map((e) => e.kind)).to.deep.equal(['create', 'update']);
      for (const e of events) {
        expect(e.actor).to.deep.equal({ id: 'u-42', name: 'alice', via: 'state' });
        expect(e.requestId).to.equal(requestId);
        expect(e.ip).to.be.a('string');
      }
      const request = await fx.events({ kind: 'request', requestId });
      expect(request).to.have.length(1);
      expect(request[0].http?.clientRequestId).to.equal('req-plugin-1');

      const anon = await fetch(`${r.url}/anonymous`);
      const anonId = ((await anon.json()) as { id: string }).id;
      const [created] = await fx.events({ model: Note.modelName, documentId: anonId, kind: 'create' });
      expect(created.actor).to.equal(null);
      expect(created.requestId).to.equal(anon.headers.get('x-request-id'));
    });

    it('outside any request the actor is the system; inside withActor it is that actor', async () => {
      const a = await Note.create({ text: 'cron' });
      await fx.auditor.withActor({ id: 'cron', name: 'nightly job' }, async () => {
        await Note.updateOne({ _id: a._id }, { $set: { text: 'cron ran' } });
        await Note.deleteOne({ _id: a._id });
      });
      const events = await fx.events({ model: Note.modelName, documentId: a._id.toHexString() });
      expect(events.map((e) => [e.kind, e.actor, e.requestId])).to.deep.equal([
        ['create', { id: 'system', via: 'system' }, null],
        ['update', { id: 'cron', name: 'nightly job', via: 'explicit' }, null],
        ['delete', { id: 'cron', name: 'nightly job', via: 'explicit' }, null],
      ]);
    });
  });

  describe('include / exclude / redact', () => {
    it('redacts by path segment, built-in and schema keys, in from and to, on every kind', async () => {
      const M = fx.model<Account>(ACCOUNT, { redact: ['pin'] });
      const a = await M.create({ name: 'n', password: 'hunter2', pin: '1234', profile: { bio: 'b', apiKey: 'k1', pinCode: '9' } });
      await M.updateOne({ _id: a._id }, { $set: { password: 'hunter3', pin: '5678', 'profile.apiKey': 'k2', 'profile.bio': 'b2' } });
      await M.deleteOne({ _id: a._id });
      const [create, update, del] = await fx.events({ model: M.modelName });
      const R = '[REDACTED]';
      expect(byPath(create.changes)).to.deep.equal([
        { path: 'name', from: null, to: 'n' },
        { path: 'password', from: null, to: R },
        { path: 'pin', from: null, to: R },
        { path: 'profile.apiKey', from: null, to: R },
        { path: 'profile.bio', from: null, to: 'b' },
        { path: 'profile.pinCode', from: null, to: R }, // judged by its words: pin code
      ]);
      expect(byPath(update.changes)).to.deep.equal([
        { path: 'password', from: R, to: R, changed: true },
        { path: 'pin', from: R, to: R, changed: true },
        { path: 'profile.apiKey', from: R, to: R, changed: true },
        { path: 'profile.bio', from: 'b', to: 'b2' },
      ]);
      expect(byPath(del.changes).filter((c) => c.from === R).map((c) => c.path)).to.deep.equal(['password', 'pin', 'profile.apiKey', 'profile.pinCode']);
      expect(byPath(del.changes).filter((c) => c.from !== R).map((c) => c.path)).to.deep.equal(['name', 'profile.bio']);
      const raw = JSON.stringify(await fx.auditor.model.find({ model: M.modelName }).lean());
      for (const secret of ['hunter2', 'hunter3', '1234', '5678', 'k1', 'k2']) expect(raw).to.not.include(secret);
    });

    it('redacts the filter and update of a summary event by path segment too', async () => {
      const M = fx.model<{ creds: { pin: string }; grp: string }>({ creds: { pin: String }, grp: String }, { redact: ['pin'], maxDocuments: 1 });
      await M.create([{ creds: { pin: '1111' }, grp: 'g' }, { creds: { pin: '1111' }, grp: 'g' }]);
      await M.updateMany({ 'creds.pin': '1111' }, { $set: { 'creds.pin': '2222' } });
      const [summary] = await fx.events({ model: M.modelName, kind: 'update' });
      expect(summary.summary).to.deep.equal({ filter: { 'creds%2Epin': '[REDACTED]' }, update: { '%24set': { 'creds%2Epin': '[REDACTED]' } }, matched: 2 });
      const raw = JSON.stringify(await fx.auditor.model.find({ model: M.modelName }).lean());
      expect(raw).to.not.include('1111');
      expect(raw).to.not.include('2222');
    });

    it('redacts secret keys inside arrays and Mixed values too', async () => {
      const M = fx.model<{ list: unknown[] }>({ list: [Schema.Types.Mixed] });
      await M.create({ list: [{ user: 'x', token: 'abc' }] });
      const [create] = await fx.events({ model: M.modelName });
      expect(create.changes).to.deep.equal([{ path: 'list', from: null, to: [{ user: 'x', token: '[REDACTED]' }] }]);
    });

    it('include limits the audited fields (and what is read); exclude removes fields', async () => {
      const Inc = fx.model<Account>(ACCOUNT, { include: ['name', 'internal.a'] });
      const a = await Inc.create({ name: 'n', n: 1, internal: { a: 1, b: 2 } });
      await Inc.updateOne({ _id: a._id }, { $set: { n: 2, 'internal.b': 3 } });
      await Inc.updateOne({ _id: a._id }, { $set: { name: 'm', 'internal.a': 5 } });
      const inc = await fx.events({ model: Inc.modelName });
      expect(inc.map((e) => e.kind)).to.deep.equal(['create', 'update'], 'the update of non-included fields records nothing');
      expect(byPath(inc[0].changes)).to.deep.equal([{ path: 'internal.a', from: null, to: 1 }, { path: 'name', from: null, to: 'n' }]);
      expect(byPath(inc[1].changes)).to.deep.equal([{ path: 'internal.a', from: 1, to: 5 }, { path: 'name', from: 'n', to: 'm' }]);

      const Exc = fx.model<Account>(ACCOUNT, { exclude: ['internal', 'n', 'internal.a'] });
      const b = await Exc.create({ name: 'n', n: 1, internal: { a: 1 } });
      await Exc.updateOne({ _id: b._id }, { $set: { n: 2, 'internal.a': 2 } });
      await Exc.updateOne({ _id: b._id }, { $set: { n: 3, name: 'x' } });
      await Exc.deleteOne({ _id: b._id }); // reads the whole document but the excluded fields
      const exc = await fx.events({ model: Exc.modelName });
      expect(exc.map((e) => e.kind)).to.deep.equal(['create', 'update', 'delete']);
      expect(exc[2].changes).to.deep.equal([{ path: 'name', from: 'x', to: null }]);
      expect(exc[0].changes).to.deep.equal([{ path: 'name', from: null, to: 'n' }]);
      expect(exc[1].changes).to.deep.equal([{ path: 'name', from: 'n', to: 'x' }]);
      expect(JSON.stringify(exc)).to.not.include('__v');
    });

    it('fetchBefore: false lists the fields set with their new values, from null', async () => {
      const M = fx.model<Account>(ACCOUNT, { fetchBefore: false });
      const a = await M.create({ name: 'n', n: 1, profile: { bio: 'b' } });
      await M.updateOne({ _id: a._id }, { $inc: { n: 2 }, $set: { 'profile.bio': 'c' } });
      await M.updateMany({ name: 'n' }, { $unset: { n: 1 } });
      const loaded = (await M.findById(a._id))!;
      loaded.name = 'saved';
      await loaded.save();
      await M.deleteOne({ _id: a._id });
      const events = await fx.events({ model: M.modelName });
      expect(events.map((e) => [e.kind, e.operation])).to.deep.equal([
        ['create', 'save'], ['update', 'updateOne'], ['update', 'updateMany'], ['update', 'save'], ['delete', 'deleteOne'],
      ]);
      expect(byPath(events[1].changes)).to.deep.equal([{ path: 'n', from: null, to: 3 }, { path: 'profile.bio', from: null, to: 'c' }]);
      expect(events[2].changes).to.deep.equal([{ path: 'n', from: null, to: null }]);
      expect(events[3].changes).to.deep.equal([{ path: 'name', from: null, to: 'saved' }]);
      expect(events[4].changes).to.deep.equal([]);

      const id = new mongo.ObjectId();
      await M.updateOne({ _id: id }, { $set: { name: 'upserted' } }, { upsert: true });
      const [created] = await fx.events({ model: M.modelName, documentId: id.toHexString() });
      expect(created.kind).to.equal('create');
      expect(created.changes).to.deep.equal([{ path: 'name', from: null, to: 'upserted' }]);
    });

    it('invalid plugin options throw a TypeError naming the option', () => {
      const apply = (o: unknown) => () => new Schema({ a: String }).plugin(fx.auditor.plugin, o as object);
      expect(apply({ include: 'name' })).to.throw(TypeError, /"include"/);
      expect(apply({ exclude: [''] })).to.throw(TypeError, /"exclude"/);
      expect(apply({ redact: [1] })).to.throw(TypeError, /"redact"/);
      expect(apply({ fetchBefore: 'no' })).to.throw(TypeError, /"fetchBefore"/);
      expect(apply({ recordNoop: 1 })).to.throw(TypeError, /"recordNoop"/);
      expect(apply({ maxDocuments: 0 })).to.throw(TypeError, /"maxDocuments"/);
      expect(apply({ fetchbefore: false })).to.throw(TypeError, /"fetchbefore"/);
      expect(apply({ deduplicate: true })).to.throw(TypeError, /"deduplicate"/); // never documented nor used
      expect(apply(null)).to.throw(TypeError, /"plugin options"/);
      expect(apply({ include: ['a.'] })).to.throw(TypeError, /"include"/);
      expect(apply({ include: ['a'] })).to.not.throw();
    });
  });

  describe('which models', () => {
    it('the global models option limits auditing to the named models', async () => {
      const only = fx.withOptions({ collection: 'only_events', models: ['Kept'] }).auditor;
      const kept = new Schema({ v: Number });
      kept.plugin(only.plugin);
      const skipped = new Schema({ v: Number });
      skipped.plugin(only.plugin);
      const Kept = fx.conn.model('Kept', kept);
      const Skipped = fx.conn.model('Skipped', skipped);
      await Kept.create({ v: 1 });
      await Skipped.create({ v: 1 });
      await Skipped.updateMany({}, { $set: { v: 2 } });
      await only.flush();
      const events = await only.model.find(APP_EVENTS).lean();
      expect(events.map((e) => e.model)).to.deep.equal(['Kept']);
    });

    it('mongoose.plugin(audit.plugin) audits every schema once, never the audit collection, never subdocuments apart', async () => {
      const m = new mongoose.Mongoose();
      const c = fx.own(await m.createConnection(await testDbUri('plugin_global')).asPromise());
      await c.dropDatabase();
      const auditor = fx.withOptions({ connection: c }).auditor;
      m.plugin(auditor.plugin);
      const schema = new m.Schema({ title: String, items: [new m.Schema({ q: Number })] });
      schema.plugin(auditor.plugin, { exclude: ['items'] }); // explicit options win; the global one adds nothing
      const Order = c.model('Order', schema);
      const Special = Order.discriminator('SpecialOrder', new m.Schema({ extra: String }));
      const o = await Order.create({ title: 'o', items: [{ q: 1 }, { q: 2 }] });
      o.title = 'p';
      o.items[0].q = 5;
      await o.save();
      await auditor.flush();
      const events = await auditor.model.find(APP_EVENTS).sort({ ts: 1, _id: 1 }).lean();
      expect(events.map((e) => [e.kind, e.model])).to.deep.equal([['create', 'Order'], ['update', 'Order']]);
      expect(events[1].changes).to.deep.equal([{ path: 'title', from: 'o', to: 'p' }]);
      // A discriminator is audited once, under its own name; its key is not mistaken for a change.
      const sp = await Special.create({ title: 's', extra: 'e' });
      await Special.updateOne({ _id: sp._id }, { $set: { extra: 'f' } });
      await Special.bulkWrite([{ updateOne: { filter: { _id: sp._id }, update: { $set: { extra: 'g' } } } }]);
      await auditor.flush();
      const special = await auditor.model.find({ model: 'SpecialOrder' }).sort({ ts: 1, _id: 1 }).lean();
      expect(special.map((e) => [e.kind, e.operation])).to.deep.equal([['create', 'save'], ['update', 'updateOne'], ['update', 'bulkWrite']]);
      expect(byPath(special[0].changes)).to.deep.equal([
        { path: '__t', from: null, to: 'SpecialOrder' },
        { path: 'extra', from: null, to: 'e' },
        { path: 'title', from: null, to: 's' }, // items: excluded by the base schema's options, inherited
      ]);
      expect(special[1].changes).to.deep.equal([{ path: 'extra', from: 'e', to: 'f' }]);
      expect(special[2].changes).to.deep.equal([{ path: 'extra', from: 'f', to: 'g' }]);
      await auditor.model.deleteMany({ model: 'SpecialOrder' });

      // A mongoose write to the audit collection itself is not audited (it would feed itself).
      await auditor.model.updateOne({ _id: events[0]._id }, { $set: { meta: { touched: true } } });
      await auditor.flush();
      expect(await auditor.model.countDocuments(APP_EVENTS)).to.equal(2);
    });
  });
});

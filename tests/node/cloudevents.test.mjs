// Every event of the bank's GET /events, after real traffic, read by the
// CloudEvents SDK for JavaScript: as a CloudEvent built with strict
// validation, and through HTTP.toEvent in structured mode (one event per
// request body, as a webhook would deliver it).
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { CloudEvent, HTTP } from 'cloudevents';

import { BankClient, dropDatabase, prepareDatabase, startBank } from './lib/bank.mjs';
import { bankTraffic } from './lib/traffic.mjs';

let db;
let bank;
before(async () => {
  db = await prepareDatabase();
  bank = await startBank(db);
});
after(async () => {
  if (bank) await bank.stop();
  if (db) await dropDatabase(db);
});

test('the CloudEvents SDK parses every event of GET /events', async () => {
  const client = new BankClient(bank.url, db.token);
  const traffic = await bankTraffic(client, 'ce');
  const accounts = new Set(traffic.accounts);
  const transfers = new Set(Object.keys(traffic.transfers));
  const { events } = await client.followEvents((all) => transfers.size === all.filter(
      (e) => transfers.has(e.subject) && /^bank\.transfer\.(completed|failed)\.v1$/.test(e.type))
      .length, { limit: 7 });
  assert.ok(events.length >= 20, `only ${events.length} events`);

  const ids = new Set();
  for (const item of events) {
    const event = new CloudEvent(item, true);  // strict: validates
    assert.equal(event.specversion, '1.0');
    assert.equal(event.id, item.id);
    assert.match(event.id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    assert.equal(event.source, '/bank');
    assert.equal(event.type, item.type);
    assert.match(event.type, /^bank\.(account|transfer)\.[a-z_]+\.v1$/);
    assert.equal(event.datacontenttype, 'application/json');
    assert.ok(!Number.isNaN(Date.parse(event.time)), `time ${event.time}`);
    assert.deepEqual(event.data, item.data);
    assert.equal(event.position, item.position);
    assert.equal(event.streamversion, item.streamversion);
    // The schema is this test's own: every event comes from its traffic.
    assert.ok(event.category === 'account' ? accounts.has(event.subject)
                                           : transfers.has(event.subject),
              `${event.category} ${event.subject}`);
    assert.ok(['account', 'transfer'].includes(event.category));
    assert.ok(!ids.has(event.id), `event ${event.id} twice`);
    ids.add(event.id);

    const received = HTTP.toEvent({
      headers: { 'content-type': 'application/cloudevents+json; charset=utf-8' },
      body: JSON.stringify(item),
    });
    assert.ok(!Array.isArray(received));
    assert.equal(received.id, item.id);
    assert.equal(received.source, item.source);
    assert.equal(received.type, item.type);
    assert.equal(received.subject, item.subject);
    assert.deepEqual(received.data, item.data);
  }

  // A deposit as the SDK sees it.
  const deposit = events.map((e) => new CloudEvent(e)).find(
      (e) => e.type === 'bank.account.deposited.v1' && e.subject === 'ce-ann');
  assert.ok(deposit);
  assert.deepEqual(deposit.data, { amount: 10000 });
  assert.equal(deposit.streamversion, 2);
});

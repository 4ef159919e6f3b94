// The bank's GET /events/stream followed by the WHATWG EventSource client
// of the `eventsource` package (nobody here wrote it) while 16 writers
// deposit, some of them holding their transactions open while others
// commit, and the bank is killed with SIGKILL mid-stream and started again
// (on a new port: the client's fetch goes to the current bank). The client
// reconnects by itself with Last-Event-ID
// and, in the end, has received every published event exactly once, in the
// store's commit order: the same list GET /events pages give.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { after, before, test } from 'node:test';

import { EventSource } from 'eventsource';

import {
  BankClient, dropDatabase, prepareDatabase, startBank, waitUntil,
} from './lib/bank.mjs';

// Every type the bank publishes; EventSource dispatches each `event:` name
// to its own listeners.
const TYPES = [
  'bank.account.opened', 'bank.account.deposited', 'bank.account.withdrawn',
  'bank.account.closed', 'bank.account.transfer_debited',
  'bank.account.transfer_credited', 'bank.account.transfer_refunded',
  'bank.transfer.requested', 'bank.transfer.completed', 'bank.transfer.failed',
].map((t) => `${t}.v1`);

const WRITERS = 16;
const DEPOSITS_PER_WRITER = 40;
const HELD = 4;  // transactions held open while the others commit

let db;
let bank;
before(async () => {
  db = await prepareDatabase();
  bank = await startBank(db);
});
after(async () => {
  if (bank) await bank.kill('SIGKILL');
  if (db) await dropDatabase(db);
});

// A deposit appended by psql in a transaction that stays open for
// `holdMs` after it took its transaction id and wrote its event, so that
// writers who start later commit first: the event commits late.
function heldDeposit(account, holdMs) {
  const schema = db.schema;
  const sql = `
    BEGIN;
    SELECT outcome FROM ${schema}.append_v3(
      'account-${account}', -1, ARRAY['${randomUUID()}']::uuid[],
      ARRAY['MoneyDeposited'], ARRAY[1], ARRAY['{"amount":1}']::json[],
      ARRAY['{}']::json[], '${schema}_events');
    SELECT pg_sleep(${holdMs / 1000});
    COMMIT;`;
  return new Promise((resolve, reject) => {
    const psql = spawn('psql', [db.url, '-v', 'ON_ERROR_STOP=1', '-q', '-X'],
                       { stdio: ['pipe', 'ignore', 'pipe'] });
    let stderr = '';
    psql.stderr.on('data', (d) => { stderr += d; });
    psql.on('error', reject);
    psql.on('exit', (code) => (code === 0 ? resolve()
                                         : reject(new Error(`psql: ${stderr}`))));
    psql.stdin.end(sql);
  });
}

// Retries `call` while the bank is down (connection refused or reset, or
// 503 while it starts); the Idempotency-Key makes a retry of a deposit that
// did commit a no-op.
async function untilAccepted(call) {
  for (;;) {
    try {
      return await call();
    } catch (e) {
      if (e.status !== undefined && e.status !== 503) throw e;
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
  }
}

test('EventSource receives every published event exactly once, in commit ' +
     'order, across a SIGKILL of the server', async () => {
  const client = new BankClient(bank.url, db.token);
  const accounts = [];
  for (let w = 0; w < WRITERS; ++w) {
    accounts.push(`es-${w}`);
    await client.openAccount(`es-${w}`);
  }

  const received = [];  // CloudEvents in arrival order
  let opens = 0;
  // The restarted bank has a new port: every (re)connection goes to the
  // current one, with the path and Last-Event-ID the client chose.
  const source = new EventSource(`${bank.url}/events/stream`, {
    fetch: (input, init) => {
      const url = new URL(input);
      url.port = String(bank.port);
      return fetch(url, {
        ...init,
        headers: { ...init.headers, authorization: `Bearer ${db.token}` },
      });
    },
  });
  source.addEventListener('open', () => { opens += 1; });
  for (const type of TYPES) {
    source.addEventListener(type, (message) => {
      const event = JSON.parse(message.data);
      assert.equal(event.type, type);
      assert.equal(message.lastEventId, event.position);
      received.push(event);
    });
  }
  await waitUntil(() => opens === 1 && received.length >= WRITERS,
                  { what: 'the stream to deliver the opened accounts' });

  // 16 writers over HTTP, and transactions held open beside them.
  let written = 0;
  const writers = accounts.map(async (account) => {
    for (let i = 0; i < DEPOSITS_PER_WRITER; ++i) {
      const key = randomUUID();
      await untilAccepted(() => new BankClient(bank.url, db.token).post(
          `/accounts/${account}/deposit`, { amount: 1 }, { 'idempotency-key': key }));
      written += 1;
    }
  });
  const held = [];
  for (let h = 0; h < HELD; ++h) {
    held.push(waitUntil(() => written >= (h + 1) * 100, { timeoutMs: 120000 })
        .then(() => heldDeposit(accounts[h], 1500)));
  }

  // The crash, mid-stream, then a new bank (on a new port).
  await waitUntil(() => written >= (WRITERS * DEPOSITS_PER_WRITER) / 3,
                  { timeoutMs: 120000, what: 'a third of the deposits' });
  const beforeKill = received.length;
  const killed = await bank.kill('SIGKILL');
  assert.equal(killed.signal, 'SIGKILL');
  bank = await startBank(db);

  await Promise.all(writers);
  await Promise.all(held);
  assert.ok(received.length > beforeKill || opens >= 1);

  // The truth: every published event, in commit order, from the pages.
  const { events } = await new BankClient(bank.url, db.token).followEvents(
      (all) => all.filter((e) => e.type === 'bank.account.deposited.v1').length ===
               WRITERS * DEPOSITS_PER_WRITER + HELD,
      { limit: 1000, timeoutMs: 120000 });
  await waitUntil(() => received.length >= events.length,
                  { timeoutMs: 120000, what: 'the stream to catch up with the feed' });
  source.close();

  assert.ok(opens >= 2, `the client reconnected (${opens} opens)`);
  const ids = received.map((e) => e.id);
  assert.equal(new Set(ids).size, ids.length, 'an event arrived twice');
  assert.deepEqual(ids, events.map((e) => e.id),
                   'the stream and the feed disagree on the events or their order');
  assert.equal(events.filter((e) => e.type === 'bank.account.deposited.v1').length,
               WRITERS * DEPOSITS_PER_WRITER + HELD);
});

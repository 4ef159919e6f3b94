// The built `bank` binary as a separate process on the test PostgreSQL, for
// the Node tests of tests/node/ (real third-party clients against the real
// server), and a small HTTP client for its routes.
//
//   const db = await prepareDatabase();          // own schema + token
//   let bank = await startBank(db);              // on a port it picks
//   const client = new BankClient(() => bank.url, db.token);
//   await client.openAccount('ann-1');
//   await client.deposit('ann-1', 500);
//   await bank.kill('SIGKILL');                   // or bank.stop()
//   bank = await startBank(db);                   // a new port: client follows
//   await bank.stop();
//   await dropDatabase(db);
//
// Where things are: BANK_BINARY (ctest sets it; default
// <repo>/build/example_app/bank) and CQRS_TEST_DATABASE_URL (scripts/test
// sets it after starting its throwaway cluster). Without the database URL a
// test fails with a message saying to run scripts/test; it never skips.
//
// Every bank started here is SIGKILLed when the Node process exits, so a
// failing test leaves none behind.
import { spawn, execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { randomBytes } from 'node:crypto';

const run = promisify(execFile);
const repo = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

export function bankBinary() {
  const binary = process.env.BANK_BINARY || resolve(repo, 'build', 'example_app', 'bank');
  if (!existsSync(binary)) {
    throw new Error(`no bank binary at ${binary}: build it (cmake --build build --target bank) ` +
                    'or set BANK_BINARY');
  }
  return binary;
}

export function databaseUrl() {
  const url = process.env.CQRS_TEST_DATABASE_URL;
  if (!url) {
    throw new Error('CQRS_TEST_DATABASE_URL is not set: run the tests with scripts/test, which ' +
                    'starts a throwaway PostgreSQL cluster and sets it');
  }
  return url;
}

function databaseArgs(db) {
  return ['--database-url', db.url, '--schema', db.schema];
}

// Runs `bank args...` to completion; its standard output. Throws with the
// output when it exits non-zero.
export async function bankCommand(args) {
  try {
    const { stdout } = await run(bankBinary(), args, { maxBuffer: 16 << 20 });
    return stdout;
  } catch (e) {
    throw new Error(`bank ${args.join(' ')} failed (${e.code}): ${e.stderr || e.message}`);
  }
}

// A schema of its own (migrated) and a key with `scopes`:
// {url, schema, token}.
export async function prepareDatabase(
    { scopes = ['events', 'commands', 'queries', 'admin'] } = {}) {
  const db = {
    url: databaseUrl(),
    schema: `node_${process.pid}_${randomBytes(4).toString('hex')}`,
  };
  await bankCommand(['migrate', ...databaseArgs(db)]);
  db.token = await createToken(db, { scopes });
  return db;
}

// `bank keys create` prints the token alone on its last line.
export async function createToken(db, { name = 'node-test', scopes }) {
  const out = await bankCommand(['keys', 'create', '--name', name, '--scopes', scopes.join(','),
                                 ...databaseArgs(db)]);
  const token = out.trim().split('\n').pop();
  if (!token.startsWith('cqrs_')) throw new Error(`keys create printed no token: ${out}`);
  return token;
}

// Drops the schema with everything in it (psql, which comes with
// PostgreSQL).
export async function dropDatabase(db) {
  await run('psql', [db.url, '-v', 'ON_ERROR_STOP=1', '-q', '-c',
                     `DROP SCHEMA IF EXISTS ${db.schema} CASCADE`]);
}

const running = new Set();
process.on('exit', () => {
  for (const child of running) child.kill('SIGKILL');
});

// A `bank serve` process. Its log (JSON lines on standard error) is kept in
// `log` for messages.
export class Bank {
  constructor(child, port) {
    this.child = child;
    this.port = port;
    this.url = `http://127.0.0.1:${port}`;
    this.log = [];
    this.exited = new Promise((resolve) => {
      if (child.exitCode !== null || child.signalCode !== null) {
        running.delete(child);
        resolve({ code: child.exitCode, signal: child.signalCode });
        return;
      }
      child.once('exit', (code, signal) => {
        running.delete(child);
        resolve({ code, signal });
      });
    });
  }

  // SIGTERM: the server drains and stops; resolves with {code, signal}.
  stop() {
    return this.kill('SIGTERM');
  }

  // Sends `signal` (e.g. SIGKILL, as a crash) and waits for the exit.
  kill(signal = 'SIGKILL') {
    if (this.child.exitCode === null && this.child.signalCode === null) {
      this.child.kill(signal);
    }
    return this.exited;
  }
}

// Starts `bank serve` on `db` and resolves once /readyz answers 200. The
// server listens on port 0 and names the port it got in its "listening" log
// line: never a port picked here, which another process could take first. A
// restarted bank therefore has a new port; clients that outlive a restart
// take the URL as a function (BankClient(() => bank.url, ...)).
export async function startBank(db, { args = [], timeoutMs = 60000 } = {}) {
  const child = spawn(bankBinary(), [
    'serve', '--listen', '127.0.0.1:0', '--log-format', 'json', '--workers', '4',
    ...databaseArgs(db), ...args,
  ], { stdio: ['ignore', 'ignore', 'pipe'] });
  running.add(child);
  const log = [];
  const listening = new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stderr });
    lines.on('line', (line) => {
      log.push(line);
      if (log.length > 1000) log.shift();
      let entry;
      try {
        entry = JSON.parse(line);
      } catch {
        return;
      }
      if (entry.msg === 'listening') resolve(entry.port);
    });
    child.once('exit', (code, signal) => {
      reject(new Error(`bank serve exited (${code ?? signal}) before listening:\n` +
                       log.join('\n')));
    });
    child.once('error', reject);
  });
  // Whichever loses the race must not reject unhandled later.
  listening.catch(() => {});
  let timeout;
  const timer = new Promise((_, reject) => {
    timeout = setTimeout(
        () => reject(new Error(`bank serve did not listen within ${timeoutMs} ms`)), timeoutMs);
  });
  let bank;
  try {
    bank = new Bank(child, await Promise.race([listening, timer]));
  } catch (e) {
    child.kill('SIGKILL');
    throw e;
  } finally {
    clearTimeout(timeout);
  }
  bank.log = log;
  await waitUntil(async () => {
    try {
      return (await fetch(`${bank.url}/readyz`)).status === 200;
    } catch {
      return false;
    }
  }, { timeoutMs, what: 'the bank to be ready' });
  return bank;
}

// Polls `condition` (async, truthy when done) every `pollMs` until it holds;
// its last value. Throws after `timeoutMs`: the timeout only bounds a
// failing test.
export async function waitUntil(condition, { timeoutMs = 30000, pollMs = 20, what = 'a condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = await condition();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, pollMs));
  }
}

export class HttpError extends Error {
  constructor(method, path, status, body) {
    super(`${method} ${path}: ${status} ${JSON.stringify(body)}`);
    this.status = status;
    this.body = body;
  }
}

// The bank's routes over fetch with a bearer token. Each method resolves
// with the parsed JSON body, or throws HttpError for a status that is not
// 2xx.
export class BankClient {
  // `url`: the bank's base URL, or a function returning the current one (to
  // follow a bank restarted on a new port).
  constructor(url, token) {
    this.base = typeof url === 'function' ? url : () => url;
    this.token = token;
  }

  get url() {
    return this.base();
  }

  async request(method, path, body, headers = {}) {
    const response = await fetch(`${this.url}${path}`, {
      method,
      headers: {
        ...(this.token ? { authorization: `Bearer ${this.token}` } : {}),
        ...(body === undefined ? {} : { 'content-type': 'application/json' }),
        ...headers,
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await response.text();
    let parsed = text;
    if ((response.headers.get('content-type') || '').includes('json')) parsed = JSON.parse(text);
    if (response.status < 200 || response.status > 299) {
      throw new HttpError(method, path, response.status, parsed);
    }
    return parsed;
  }

  get(path, headers) {
    return this.request('GET', path, undefined, headers);
  }

  post(path, body = {}, headers) {
    return this.request('POST', path, body, headers);
  }

  openAccount(id, { owner = 'Ann', currency = 'EUR' } = {}) {
    return this.post('/accounts', { owner, currency, account_id: id });
  }

  deposit(id, amount) {
    return this.post(`/accounts/${encodeURIComponent(id)}/deposit`, { amount });
  }

  withdraw(id, amount) {
    return this.post(`/accounts/${encodeURIComponent(id)}/withdraw`, { amount });
  }

  closeAccount(id) {
    return this.post(`/accounts/${encodeURIComponent(id)}/close`, {});
  }

  transfer(from, to, amount, transferId) {
    return this.post('/transfers', { from, to, amount, transfer_id: transferId });
  }

  // The transfer once it is completed or failed.
  settledTransfer(id) {
    return waitUntil(async () => {
      try {
        const t = await this.get(`/transfers/${encodeURIComponent(id)}`);
        return t.status === 'pending' ? null : t;
      } catch (e) {
        if (e.status === 404) return null;  // its read model lags
        throw e;
      }
    }, { what: `transfer ${id} to settle` });
  }

  // One page of GET /events: {items, next}. `query`: after, limit, type,
  // subject, category.
  events(query = {}) {
    const params = new URLSearchParams(
        Object.entries(query).filter(([, v]) => v !== undefined && v !== ''));
    const suffix = params.toString() ? `?${params}` : '';
    return this.get(`/events${suffix}`);
  }

  // Every event of the feed from `after` on, page by page, until `done`
  // (called with all the events read so far) holds; polls, since an event
  // is readable only once no older transaction is open.
  async followEvents(done, { after, limit = 50, timeoutMs = 30000 } = {}) {
    const all = [];
    let cursor = after;
    await waitUntil(async () => {
      for (;;) {
        const page = await this.events({ after: cursor, limit });
        all.push(...page.items);
        cursor = page.next;
        if (page.items.length === 0) break;
      }
      return done(all);
    }, { timeoutMs, what: 'the expected events on GET /events' });
    return { events: all, next: cursor };
  }
}

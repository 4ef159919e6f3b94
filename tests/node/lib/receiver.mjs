// A webhook receiver for the Node tests: one HTTP server (127.0.0.1, a free
// port) with any number of endpoint paths, each verifying every request
// with the official `standardwebhooks` package (nobody here wrote it) and
// recording what arrived. How a path answers can change at run time.
//
//   const receiver = await Receiver.start();
//   const a = receiver.endpoint('/a', { mode: 'chaos' });
//   a.secrets.push(secret);              // from POST /webhooks
//   ... a.mode = 'ok' ...
//   for (const r of a.requests) console.log(r.id, r.verified, r.answer);
//   await receiver.close();
//
// Modes:
//   ok     200
//   chaos  at random: 500, a hang past the sender's timeout, a reset
//          connection (req.socket.destroy()), 429 with Retry-After: 1, or
//          200 (half of the time)
//   gone   410
//   fail   500
//
// Every request is recorded (in arrival order) as {path, id (the
// CloudEvent's), webhookId (the header), type, subject, category,
// streamversion, body (the raw text), signatures (how many the header
// carried), verified (with any of the path's secrets), verifiedWith
// (indexes into `secrets`), answer (200, 500, 429, 410, 'hang', 'reset'),
// at and answeredAt (performance.now() when the request arrived and when
// it was answered; for a hang, when the sender gave up), error}.
// A hang lasts until the sender closes the connection or `hangCapMs`
// passes (then answer is 'hang-capped': the sender never timed out).
//
// Single-threaded (Node's event loop): read the records at any time.
import { createServer } from 'node:http';
import { performance } from 'node:perf_hooks';

import { Webhook } from 'standardwebhooks';

export const MODES = ['ok', 'chaos', 'gone', 'fail'];

// A small seeded generator (mulberry32) so that a chaos run can be told
// apart from another by its seed.
function random(seed) {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

// One endpoint path: its secrets, its mode and what it received.
export class ReceiverEndpoint {
  constructor(path, { mode = 'ok', secrets = [], failSubjects = [] } = {}) {
    this.path = path;
    this.mode = mode;
    // In chaos mode, events of these subjects always get 500: their
    // deliveries are parked, with their streams behind them.
    this.failSubjects = new Set(failSubjects);
    this.secrets = secrets;
    this.requests = [];
  }

  // The requests whose CloudEvent id is `id`, in arrival order.
  requestsFor(id) {
    return this.requests.filter((r) => r.id === id);
  }
}

export class Receiver {
  constructor(server, { seed, hangCapMs }) {
    this.server = server;
    this.seed = seed;
    this.next = random(seed);
    this.hangCapMs = hangCapMs;
    this.endpoints = new Map();
    this.unknown = [];  // requests to paths nobody registered
    this.sockets = new Set();
    this.port = server.address().port;
  }

  // Listens on 127.0.0.1 at a free port. `seed` drives the chaos.
  static async start({ seed = Date.now() >>> 0, hangCapMs = 10000 } = {}) {
    const server = createServer();
    // The sender reuses connections; a receiver closing an idle one while
    // the sender starts a request on it would fail an attempt that never
    // reached here.
    server.keepAliveTimeout = 120000;
    await new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', resolve);
    });
    const receiver = new Receiver(server, { seed, hangCapMs });
    server.on('connection', (socket) => {
      receiver.sockets.add(socket);
      socket.once('close', () => receiver.sockets.delete(socket));
    });
    server.on('request', (req, res) => receiver.handle(req, res));
    return receiver;
  }

  url(path) {
    return `http://127.0.0.1:${this.port}${path}`;
  }

  endpoint(path, options) {
    const endpoint = new ReceiverEndpoint(path, options);
    this.endpoints.set(path, endpoint);
    return endpoint;
  }

  handle(req, res) {
    const at = performance.now();
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
      const bytes = Buffer.concat(chunks);
      const endpoint = this.endpoints.get(req.url);
      const record = this.record(endpoint, req, bytes, at);
      if (!endpoint) {
        this.unknown.push(record);
        res.writeHead(404).end();
        record.answer = 404;
        record.answeredAt = performance.now();
        return;
      }
      endpoint.requests.push(record);
      const poisoned = endpoint.mode === 'chaos' && endpoint.failSubjects.has(record.subject);
      this.answer(poisoned ? 'fail' : endpoint.mode, req, res, record);
    });
  }

  record(endpoint, req, bytes, at) {
    const body = bytes.toString('utf8');
    const record = {
      path: req.url, method: req.method, webhookId: req.headers['webhook-id'],
      timestamp: req.headers['webhook-timestamp'],
      signatures: (req.headers['webhook-signature'] || '').split(' ').filter(Boolean).length,
      contentType: req.headers['content-type'], userAgent: req.headers['user-agent'],
      body, verified: false, verifiedWith: [], at, answeredAt: undefined, answer: undefined,
      error: undefined,
    };
    try {
      const event = JSON.parse(body);
      Object.assign(record, {
        id: event.id, type: event.type, subject: event.subject, category: event.category,
        streamversion: event.streamversion,
      });
    } catch (e) {
      record.error = `body is not JSON: ${e.message}`;
    }
    const errors = [];
    for (const [i, secret] of (endpoint?.secrets ?? []).entries()) {
      try {
        // The raw bytes: what was signed, not a re-serialization.
        new Webhook(secret).verify(bytes, req.headers);
        record.verifiedWith.push(i);
      } catch (e) {
        errors.push(`secret ${i}: ${e.message}`);
      }
    }
    record.verified = record.verifiedWith.length > 0;
    if (!record.verified) {
      record.error ??= errors.join('; ') || 'no secret to verify with';
    }
    return record;
  }

  answer(mode, req, res, record) {
    const reply = (status, headers = {}) => {
      record.answer = status;
      res.writeHead(status, { 'content-type': 'text/plain', ...headers }).end(`${status}\n`);
      record.answeredAt = performance.now();
    };
    if (mode === 'ok') return reply(200);
    if (mode === 'gone') return reply(410);
    if (mode === 'fail') return reply(500);
    if (mode !== 'chaos') throw new Error(`unknown receiver mode ${mode}`);
    const r = this.next();
    if (r < 0.2) return reply(500);
    if (r < 0.3) return reply(429, { 'retry-after': '1' });
    if (r < 0.4) {
      record.answer = 'reset';
      req.socket.destroy();
      record.answeredAt = performance.now();
      return undefined;
    }
    if (r < 0.5) {
      // Never answers; the sender's timeout ends it (or the cap does).
      record.answer = 'hang';
      const cap = setTimeout(() => {
        record.answer = 'hang-capped';
        req.socket.destroy();
      }, this.hangCapMs);
      req.socket.once('close', () => {
        clearTimeout(cap);
        record.answeredAt = performance.now();
      });
      return undefined;
    }
    return reply(200);
  }

  // Stops listening and drops every connection (hanging ones included).
  async close() {
    for (const socket of this.sockets) socket.destroy();
    await new Promise((resolve) => this.server.close(resolve));
  }
}

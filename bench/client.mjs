// The load generator of ws-template's benchmark: node's `ws` client, driven by bench/run.py.
//
//   node client.mjs keepalive --url ws://127.0.0.1:PORT/ws/keepalive --connections 10 \
//       --warmup 1 --duration 5
//   node client.mjs counted --url ... --connections 10 --warmup 1 --round-trips 2000
//   node client.mjs idle --url ... --connections 10000
//   node client.mjs idle --url ... --connections 50000 --local-addresses 3
//   node client.mjs ticker --url ws://127.0.0.1:PORT/ws/clock --connections 5000 \
//       --period 1 --settle 2 --duration 10
//   node client.mjs broadcast --url ws://127.0.0.1:PORT/ws/rooms/bench --connections 10000 \
//       --messages 30 --warmup-messages 2 --interval 0.2
//   node client.mjs broadcast --transport socketio --url ws://127.0.0.1:PORT/ws/rooms/bench ...
//   node client.mjs presence --url ws://127.0.0.1:PORT/ws/rooms/bench --connections 10000 \
//       --round-trips 20
//
// It prints one JSON object per line on stdout: events ({"event": "window-start"}, ...) at
// the moments bench/run.py samples the server's and this process's CPU and memory, then
// {"event": "result", ...} with what it measured. In counted and idle modes it waits for
// "go" (and "close"; presence mode "ask" too) on stdin between its phases. Every connection is to 127.0.0.1 and offers no
// permessage-deflate (the service's default clients in the benchmark send small JSON).
// Broadcast mode with --transport socketio speaks Socket.IO instead (socket.io-client,
// websocket transport only), to a python-socketio server (bench/baselines/socketio_app.py).
// Errors end the process with a one-line message on stderr and exit code 1.

import { EventEmitter } from "node:events";
import { performance } from "node:perf_hooks";
import readline from "node:readline";
import { parseArgs } from "node:util";
import { io } from "socket.io-client";
import WebSocket from "ws";

const OPTIONS = {
  url: { type: "string" },
  connections: { type: "string", default: "1" },
  "open-concurrency": { type: "string", default: "50" },
  warmup: { type: "string", default: "1" },
  duration: { type: "string", default: "5" },
  period: { type: "string", default: "1" },
  settle: { type: "string", default: "2" },
  "round-trips": { type: "string", default: "1000" },
  messages: { type: "string", default: "30" },
  "warmup-messages": { type: "string", default: "2" },
  interval: { type: "string", default: "0.2" },
  "fanout-timeout": { type: "string", default: "30" },
  pause: { type: "string", default: "0" },
  "local-addresses": { type: "string", default: "1" },
  "handshake-timeout": { type: "string", default: "30" },
  transport: { type: "string", default: "ws" },
};

// Connections come from this many loopback addresses (127.0.0.1, 127.0.0.2, ...) in turn:
// one address gives at most the ephemeral port range (about 28,000 on Linux) of
// connections to one server port, so 50,000 connections need two. Set by main().
let localAddresses = 1;
let handshakeTimeoutMs = 30000; // --handshake-timeout, in seconds: set by main()
let connectionsStarted = 0;

/** The loopback address the next connection comes from; undefined for one address: a
 * connection bound to an address first must have a port of its own on it (bind), where
 * an unbound one needs only a 4-tuple of its own, so that other programs' connections on
 * a shared machine do not use up the ports this one needs. */
function nextLocalAddress() {
  if (localAddresses === 1) return undefined;
  return `127.0.0.${1 + (connectionsStarted++ % localAddresses)}`;
}

// Replies that count as a round trip: a keepalive_ack, or the keepalive itself from an echo
// server. Anything else (an error reply, say) is counted as bad and fails the run.
const REPLY_PREFIX = Buffer.from('{"type":"keepalive');

// Idle mode reports this many steps while it opens its connections (for a memory curve).
const PROGRESS_STEPS = 10;
// Idle mode opens, uses and closes this many connections before the server's memory is read.
const WARMUP_CONNECTIONS = 50;

function fail(message) {
  process.stderr.write(`client.mjs: ${message}\n`);
  process.exit(1);
}

function emit(object) {
  process.stdout.write(`${JSON.stringify(object)}\n`);
}

function sleep(seconds) {
  return new Promise((resolve) => setTimeout(resolve, seconds * 1000));
}

/** Wall-clock time in milliseconds since the epoch, with sub-millisecond resolution. */
function wallMs() {
  return performance.timeOrigin + performance.now();
}

function keepaliveText() {
  return `{"type":"keepalive","client_ns":${process.hrtime.bigint()}}`;
}

/** Percentiles of `values` (a Float64Array), by the nearest-rank method. */
function percentiles(values) {
  if (values.length === 0) return { p50: null, p99: null, max: null };
  const sorted = Float64Array.from(values).sort();
  const rank = (q) => sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)];
  return { p50: rank(0.5), p99: rank(0.99), max: sorted[sorted.length - 1] };
}

/** A growable array of doubles. */
class Samples {
  constructor() {
    this.values = new Float64Array(1 << 16);
    this.length = 0;
  }

  push(value) {
    if (this.length === this.values.length) {
      const bigger = new Float64Array(this.values.length * 2);
      bigger.set(this.values);
      this.values = bigger;
    }
    this.values[this.length++] = value;
  }

  view() {
    return this.values.subarray(0, this.length);
  }
}

let transport = "ws"; // --transport: ws, or socketio (broadcast mode); set by main()

/** A Socket.IO connection with the surface of a `ws` socket that broadcast mode uses: its
 * "message" events carry the object the server emitted as "message" (not text), `send(text)`
 * emits the parsed JSON object as "message", "close" comes with the disconnect reason. */
class SocketIOConnection extends EventEmitter {
  constructor(socket) {
    super();
    this.socket = socket;
    this.readyState = WebSocket.CONNECTING;
    socket.on("message", (data) => this.emit("message", data));
    socket.on("disconnect", (reason) => {
      this.readyState = WebSocket.CLOSED;
      this.emit("close", reason);
    });
  }

  send(text) {
    this.socket.emit("message", JSON.parse(text));
  }

  close() {
    this.socket.disconnect();
  }

  terminate() {
    this.socket.disconnect();
  }
}

/** Open one Socket.IO connection (websocket transport only) to the server of `url`, and
 * subscribe it to the channel named by the url's path. */
function openSocketIO(url, setup) {
  return new Promise((resolve, reject) => {
    const { origin, pathname } = new URL(url);
    const localAddress = nextLocalAddress();
    const socket = io(origin, {
      transports: ["websocket"],
      forceNew: true,
      reconnection: false,
      perMessageDeflate: false,
      timeout: handshakeTimeoutMs,
      localAddress,
    });
    const connection = new SocketIOConnection(socket);
    setup(connection);
    socket.once("connect", () => {
      socket.off("connect_error");
      connection.readyState = WebSocket.OPEN;
      socket.emit("subscribe", pathname);
      resolve(connection);
    });
    socket.once("connect_error", (error) => reject(new Error(`cannot open ${url}: ${error.message}`)));
  });
}

/** Open one connection; `setup` gets the socket before any message can arrive. */
function openOne(url, setup = () => {}) {
  if (transport === "socketio") return openSocketIO(url, setup);
  return new Promise((resolve, reject) => {
    const localAddress = nextLocalAddress();
    const ws = new WebSocket(url, { perMessageDeflate: false, handshakeTimeout: handshakeTimeoutMs, localAddress });
    setup(ws);
    ws.once("open", () => {
      ws.removeAllListeners("error");
      ws.on("error", () => {}); // a late error shows up as a close; counted by the caller
      resolve(ws);
    });
    ws.once("error", (error) => reject(new Error(`cannot open ${url}: ${error.message}`)));
  });
}

/** Open `count` connections, at most `concurrency` handshakes at a time.
 *
 * `onProgress(opened)` is called after each `progressEvery` connections (but not the last).
 * A connection counts as open once `ready(ws)` resolves (at once by default).
 */
async function openMany(
  url,
  count,
  concurrency,
  setup = () => {},
  progressEvery = 0,
  onProgress = () => {},
  ready = async () => {},
) {
  const sockets = [];
  let next = 0;
  async function worker() {
    while (next < count) {
      next += 1;
      const ws = await openOne(url, setup);
      await ready(ws);
      sockets.push(ws);
      const opened = sockets.length;
      if (progressEvery > 0 && opened % progressEvery === 0 && opened < count) onProgress(opened);
    }
  }
  await Promise.all(Array.from({ length: Math.min(concurrency, count) }, worker));
  return sockets;
}

/** One keepalive round trip on an open socket. */
function roundTrip(ws) {
  return new Promise((resolve, reject) => {
    ws.once("message", (data) => {
      if (REPLY_PREFIX.equals(data.subarray(0, REPLY_PREFIX.length))) resolve();
      else reject(new Error(`unexpected reply: ${data.toString().slice(0, 200)}`));
    });
    ws.send(keepaliveText());
  });
}

/** Close every socket (code 1000) and wait for the closes, at most `seconds`. */
async function closeAll(sockets, seconds = 30) {
  const closed = sockets.map(
    (ws) =>
      new Promise((resolve) => {
        if (ws.readyState === WebSocket.CLOSED) return resolve();
        ws.once("close", resolve);
        ws.close(1000);
      }),
  );
  const timedOut = await Promise.race([
    Promise.all(closed).then(() => false),
    sleep(seconds).then(() => true),
  ]);
  if (timedOut) sockets.forEach((ws) => ws.terminate());
}

/** Keepalive round trips: each connection sends a keepalive as soon as the last is answered. */
async function keepalive(options) {
  const sockets = await openMany(options.url, options.connections, options["open-concurrency"]);
  const latencies = new Samples();
  let measuring = false;
  let running = true;
  let roundTrips = 0;
  let bad = 0;
  let closedEarly = 0;
  let outstanding = 0;
  for (const ws of sockets) {
    let sentAt = 0;
    const send = () => {
      sentAt = performance.now();
      outstanding += 1;
      ws.send(keepaliveText());
    };
    ws.on("message", (data) => {
      const now = performance.now();
      outstanding -= 1;
      if (!REPLY_PREFIX.equals(data.subarray(0, REPLY_PREFIX.length))) bad += 1;
      else if (measuring) {
        roundTrips += 1;
        latencies.push(now - sentAt);
      }
      if (running) send();
    });
    ws.on("close", () => {
      if (running) closedEarly += 1;
    });
    send();
  }
  await sleep(options.warmup);
  emit({ event: "window-start" });
  measuring = true;
  const started = performance.now();
  await sleep(options.duration);
  measuring = false;
  const seconds = (performance.now() - started) / 1000;
  emit({ event: "window-end" });
  running = false;
  for (let waited = 0; outstanding > 0 && waited < 50; waited += 1) await sleep(0.1);
  await closeAll(sockets);
  if (bad > 0) fail(`${bad} replies were not keepalive answers`);
  if (closedEarly > 0) fail(`${closedEarly} connections closed during the run`);
  const ms = percentiles(latencies.view());
  emit({
    event: "result",
    connections: sockets.length,
    seconds,
    round_trips: roundTrips,
    latency_ms: ms,
  });
}

/** A counted number of round trips, for a server under callgrind (it counts instructions).
 *
 * Warms up for `warmup` seconds, lets every connection fall quiet, says "paused" and waits
 * for "go" on stdin (the moment the counting starts), then makes exactly `round-trips`
 * round trips over its connections, one in flight on each, and says "window-end".
 */
async function counted(options) {
  const stdin = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  const sockets = await openMany(options.url, options.connections, options["open-concurrency"]);
  const until = performance.now() + options.warmup * 1000;
  const warm = async (ws) => {
    while (performance.now() < until) await roundTrip(ws);
  };
  await Promise.all(sockets.map(warm));
  emit({ event: "paused" });
  const line = await stdin.next();
  if (line.done || line.value.trim() !== "go") fail('expected "go" on stdin');
  let remaining = options["round-trips"];
  const count = async (ws) => {
    while (remaining > 0) {
      remaining -= 1;
      await roundTrip(ws);
    }
  };
  const started = performance.now();
  await Promise.all(sockets.map(count));
  const seconds = (performance.now() - started) / 1000;
  emit({ event: "window-end" });
  await closeAll(sockets);
  emit({ event: "result", connections: sockets.length, seconds, round_trips: options["round-trips"] });
}

/** Idle connections: open them, prove each is served (one round trip), hold, close. */
async function idle(options) {
  const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  const waitFor = async (word) => {
    const line = await lines.next();
    if (line.done || line.value.trim() !== word) fail(`expected "${word}" on stdin`);
  };
  // Warm the server up (imports, first-connection allocations) before its memory is read.
  const warm = await openMany(options.url, WARMUP_CONNECTIONS, 10);
  await Promise.all(warm.map(roundTrip));
  await closeAll(warm);
  emit({ event: "ready" });
  await waitFor("go");
  const started = performance.now();
  const sockets = await openMany(
    options.url,
    options.connections,
    options["open-concurrency"],
    () => {},
    Math.ceil(options.connections / PROGRESS_STEPS),
    (opened) => emit({ event: "progress", opened }),
  );
  const openSeconds = (performance.now() - started) / 1000;
  await Promise.all(sockets.map(roundTrip));
  const servedSeconds = (performance.now() - started) / 1000;
  let closedEarly = 0;
  sockets.forEach((ws) => ws.on("close", () => (closedEarly += 1)));
  emit({ event: "opened", open_seconds: openSeconds, served_seconds: servedSeconds });
  await waitFor("close");
  const heldClosedEarly = closedEarly;
  await closeAll(sockets);
  if (heldClosedEarly > 0) fail(`${heldClosedEarly} idle connections closed while held`);
  emit({
    event: "result",
    connections: sockets.length,
    open_seconds: openSeconds,
    served_seconds: servedSeconds,
  });
}

/** Ticker: receive ticks on every connection and measure how late each arrives.
 *
 * A connection's beats are at t0 + k * period, t0 being the server's send time of its first
 * tick (seq 0, sent at once on accept, which starts the schedule). A tick's beat k is read
 * from its server_ns (floor, with 1% of a period of slack for a timer that fires a hair
 * early), so a beat the server skipped is not mistaken for lateness; lateness is the receive
 * time minus the beat's time, so it includes the server's delay and the delivery.
 */
async function ticker(options) {
  const periodMs = options.period * 1000;
  const lateness = new Samples();
  let measuring = false;
  let running = true;
  let ticks = 0;
  let skippedBeats = 0;
  let closedEarly = 0;
  const track = (ws) => {
    let t0 = null;
    let lastBeat = 0;
    ws.on("message", (data) => {
      const receivedMs = wallMs();
      const message = JSON.parse(data);
      if (message.type !== "tick") return;
      const sentMs = message.server_ns / 1e6;
      if (message.seq === 0) {
        t0 = sentMs;
        return;
      }
      if (t0 === null) fail("a tick arrived before the connection's first tick (seq 0)");
      const beat = Math.floor((sentMs - t0) / periodMs + 0.01);
      if (measuring) {
        ticks += 1;
        skippedBeats += Math.max(0, beat - lastBeat - 1);
        lateness.push(receivedMs - (t0 + beat * periodMs));
      }
      lastBeat = beat;
    });
    ws.on("close", () => {
      if (running) closedEarly += 1;
    });
  };
  const sockets = await openMany(
    options.url,
    options.connections,
    options["open-concurrency"],
    track,
  );
  emit({ event: "opened" });
  await sleep(options.settle);
  emit({ event: "window-start" });
  measuring = true;
  const started = performance.now();
  await sleep(options.duration);
  measuring = false;
  const seconds = (performance.now() - started) / 1000;
  emit({ event: "window-end" });
  running = false;
  await closeAll(sockets);
  if (closedEarly > 0) fail(`${closedEarly} connections closed during the run`);
  emit({
    event: "result",
    connections: sockets.length,
    seconds,
    ticks,
    expected_ticks: (sockets.length * seconds) / options.period,
    skipped_beats: skippedBeats,
    lateness_ms: percentiles(lateness.view()),
  });
}

/** A received message for an error message: text as it came, an object as JSON. */
function shown(received) {
  return typeof received === "object" && !Buffer.isBuffer(received)
    ? JSON.stringify(received)
    : String(received);
}

/** Broadcast: one publisher, `connections` subscribers on one room, delivery latency.
 *
 * Every connection of a broadcast room (the generated service's `run_broadcast`) first gets
 * {"type": "subscribed", "offset", "epoch"} (the room's position), then every JSON object
 * published on the room, the sender's own included, as {"type": "broadcast", "offset",
 * "epoch", ..., "message": {...}}, each offset the last + 1; a subscriber whose bounded queue
 * overflowed gets {"type": "dropped", "count": n, "offset", "epoch"} in place of the lost
 * messages. Here the
 * subscribers open (`open-concurrency` handshakes in flight) and each waits for its
 * "subscribed"; then one more connection, the publisher, sends `messages` messages, each
 * {"seq": k, "sent_ms": performance.now()}. Message k + 1 goes `interval` seconds after
 * message k, and never before every subscriber has message k, so fan-outs do not overlap:
 * the figures are those of one message fanned out to every subscriber. A delivery's latency
 * is its receive time less its send time (one clock, this process); the first
 * `warmup-messages` messages are delivered and checked but not in the figures. Every
 * subscriber must get every message, in order, at contiguous offsets of one epoch (which
 * catches a loss or a duplicate even where `seq` would not): a dropped notice, an error, a
 * message out of order or off its offset, or a connection closed ends the run with a failure. The publisher's own copies are
 * checked the same way but are not deliveries.
 */
async function broadcast(options) {
  const stdin = options.pause
    ? readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]()
    : null;
  const count = options.connections;
  const total = options.messages;
  const warmup = Math.min(options["warmup-messages"], total);
  const latencies = new Samples();
  const fanoutMs = new Samples();
  const arrivals = new Uint32Array(total);
  const lastArrivalAt = new Float64Array(total);
  const everyone = Array.from({ length: total }, () => {
    let resolve;
    const promise = new Promise((done) => (resolve = done));
    return { promise, resolve };
  });
  let deliveries = 0;
  let running = true;
  const problems = {
    dropped: 0,
    errors: 0,
    out_of_order: 0,
    offset_gaps: 0,
    unexpected: 0,
    closed_early: 0,
  };
  let firstProblem = null;
  const problem = (kind, text) => {
    problems[kind] += 1;
    if (firstProblem !== null) return;
    firstProblem = text;
    setTimeout(failIfProblems, 1000); // fail soon, once the counts have had time to grow
  };
  const failIfProblems = () => {
    if (firstProblem === null) return;
    const counts = Object.entries(problems)
      .filter(([, n]) => n > 0)
      .map(([kind, n]) => `${kind.replaceAll("_", " ")}: ${n}`)
      .join(", ");
    fail(`broadcast failed (${counts}); the first: ${firstProblem}`);
  };

  // Each connection reads "subscribed" first, then the room's messages in order, each at
  // the position after the last: the offset after it, in the same epoch.
  const follow = (ws, isSubscriber) => {
    let subscribed;
    let notSubscribed;
    ws.subscribed = new Promise((resolve, reject) => {
      subscribed = resolve;
      notSubscribed = reject;
    });
    let expected = 0;
    let offset = null;
    let epoch = null;
    ws.on("message", (received) => {
      const now = performance.now();
      // Text from a websocket; an object already parsed from Socket.IO.
      const parsed = typeof received === "object" && !Buffer.isBuffer(received);
      const message = parsed ? received : JSON.parse(received);
      if (subscribed !== null) {
        if (message.type !== "subscribed") problem("unexpected", `before "subscribed": ${shown(received)}`);
        else if (!Number.isInteger(message.offset) || typeof message.epoch !== "string") {
          problem("unexpected", `"subscribed" without a position: ${shown(received)}`);
        }
        ({ offset, epoch } = message);
        subscribed();
        subscribed = null;
        return;
      }
      if (message.type === "dropped") {
        ({ offset, epoch } = message); // the position after the loss
        return problem("dropped", `a subscriber got ${shown(received)}`);
      }
      if (message.type === "error") return problem("errors", `a connection got ${shown(received)}`);
      if (message.type !== "broadcast") return problem("unexpected", `unexpected: ${shown(received)}`);
      if (message.offset !== offset + 1 || message.epoch !== epoch) {
        problem(
          "offset_gaps",
          `offset ${message.offset} of epoch ${message.epoch} came after offset ${offset} ` +
            `of epoch ${epoch}`,
        );
      }
      ({ offset, epoch } = message);
      const { seq, sent_ms: sentMs } = message.message;
      if (seq !== expected) problem("out_of_order", `message ${seq} came when ${expected} was due`);
      expected = seq + 1;
      if (!isSubscriber) return;
      deliveries += 1;
      if (seq >= warmup) latencies.push(now - sentMs);
      arrivals[seq] += 1;
      if (arrivals[seq] === count) {
        lastArrivalAt[seq] = now;
        everyone[seq].resolve();
      }
    });
    ws.on("close", (code) => {
      if (subscribed !== null) notSubscribed(new Error(`closed (${code}) before "subscribed"`));
      else if (running) problem("closed_early", `a connection closed (${code}) during the run`);
    });
  };
  const open = (isSubscriber, number) =>
    openMany(
      options.url,
      number,
      options["open-concurrency"],
      (ws) => follow(ws, isSubscriber),
      0,
      () => {},
      (ws) => ws.subscribed,
    );
  const started = performance.now();
  const subscribers = await open(true, count);
  const openSeconds = (performance.now() - started) / 1000;
  const [publisher] = await open(false, 1);
  emit({ event: "opened", open_seconds: openSeconds });

  const timeoutMs = options["fanout-timeout"] * 1000;
  let fanoutCpuUs = 0;
  let fanoutWallMs = 0;
  let windowStarted = 0;
  for (let seq = 0; seq < total; seq += 1) {
    if (seq === warmup) {
      if (options.pause) {
        // Under callgrind: say "paused" and wait for "go" (the counting has started).
        emit({ event: "paused" });
        const line = await stdin.next();
        if (line.done || line.value.trim() !== "go") fail('expected "go" on stdin');
      }
      emit({ event: "window-start" });
      windowStarted = performance.now();
    }
    const cpuBefore = process.cpuUsage();
    const sentAt = performance.now();
    publisher.send(JSON.stringify({ seq, sent_ms: sentAt }));
    let timer;
    const timedOut = new Promise((resolve) => (timer = setTimeout(() => resolve(true), timeoutMs)));
    const late = await Promise.race([everyone[seq].promise.then(() => false), timedOut]);
    clearTimeout(timer);
    failIfProblems();
    if (late) {
      fail(`message ${seq} reached ${arrivals[seq]} of ${count} subscribers in ${timeoutMs} ms`);
    }
    const cpu = process.cpuUsage(cpuBefore);
    if (seq >= warmup) {
      fanoutMs.push(lastArrivalAt[seq] - sentAt);
      fanoutCpuUs += cpu.user + cpu.system;
      fanoutWallMs += performance.now() - sentAt;
    }
    const rest = sentAt + options.interval * 1000 - performance.now();
    if (rest > 0 && seq + 1 < total) await sleep(rest / 1000);
  }
  const seconds = windowStarted ? (performance.now() - windowStarted) / 1000 : 0;
  emit({ event: "window-end" });
  await sleep(0.2); // a late duplicate or notice would show up now
  running = false;
  failIfProblems();
  await closeAll([...subscribers, publisher]);
  emit({
    event: "result",
    connections: subscribers.length,
    messages: total,
    measured_messages: total - warmup,
    seconds,
    open_seconds: openSeconds,
    deliveries,
    expected_deliveries: count * total,
    latency_ms: percentiles(latencies.view()),
    fanout_ms: percentiles(fanoutMs.view()),
    fanout_cpu: fanoutWallMs > 0 ? fanoutCpuUs / 1000 / fanoutWallMs : 0,
  });
}

/** Presence: open a room of `connections` broadcast connections, then ask who is in it.
 *
 * A connection counts as open once its "subscribed" notice is in; the join and leave events
 * of the others are counted (the service's JOIN_LEAVE_EVENTS), anything else fails the run.
 * After 50 warm-up connections it says "ready" and waits for "go", opens the room, says
 * "opened" and waits for "ask"; then one more connection sends {"type": "presence"}
 * `round-trips` times, each once the last is answered (none for 0), and each answer must
 * count the whole room, the asker included. It says "asked" and waits for "close".
 */
async function presence(options) {
  const lines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  const waitFor = async (word) => {
    const line = await lines.next();
    if (line.done || line.value.trim() !== word) fail(`expected "${word}" on stdin`);
  };
  let events = 0;
  let closedEarly = 0;
  let running = true;
  const setup = (ws) => {
    ws.subscribed = new Promise((resolve, reject) => {
      ws.once("close", (code) => {
        reject(new Error(`closed (${code}) before "subscribed"`));
        if (running) closedEarly += 1;
      });
      ws.on("message", (data) => {
        const message = JSON.parse(data);
        if (message.type === "subscribed") resolve();
        else if (message.type === "join" || message.type === "leave") events += 1;
        else if (message.type === "presence" && ws.answered) ws.answered(message);
        else fail(`unexpected: ${String(data).slice(0, 200)}`);
      });
    });
  };
  const open = (number, concurrency) =>
    openMany(options.url, number, concurrency, setup, 0, () => {}, (ws) => ws.subscribed);
  running = false;
  await closeAll(await open(50, 10));
  running = true;
  emit({ event: "ready" });
  await waitFor("go");
  const started = performance.now();
  const sockets = await open(options.connections, options["open-concurrency"]);
  const openSeconds = (performance.now() - started) / 1000;
  emit({ event: "opened", open_seconds: openSeconds, events });
  await waitFor("ask");
  const [asker] = await open(1, 1);
  const room = options.connections + 1;
  const answerMs = new Samples();
  let last = null;
  let answerBytes = 0;
  for (let n = 0; n < options["round-trips"]; n += 1) {
    const answer = new Promise((resolve) => (asker.answered = resolve));
    const sentAt = performance.now();
    asker.send('{"type":"presence"}');
    last = await answer;
    answerMs.push(performance.now() - sentAt);
    if (last.count !== room) fail(`a presence answer counted ${last.count}, not ${room}`);
    if (last.cut !== last.clients.length < last.count) fail("a presence answer's cut is wrong");
    answerBytes = JSON.stringify(last).length;
  }
  emit({ event: "asked" });
  await waitFor("close");
  running = false;
  if (closedEarly > 0) fail(`${closedEarly} connections closed while held`);
  await closeAll([...sockets, asker]);
  emit({
    event: "result",
    connections: sockets.length,
    open_seconds: openSeconds,
    events,
    answer_ms: percentiles(answerMs.view()),
    listed: last ? last.clients.length : 0,
    cut: last ? last.cut : false,
    answer_bytes: answerBytes,
  });
}

const MODES = { keepalive, counted, idle, ticker, broadcast, presence };

async function main() {
  const { values, positionals } = parseArgs({ options: OPTIONS, allowPositionals: true });
  const mode = MODES[positionals[0]];
  if (!mode || positionals.length !== 1) fail(`usage: client.mjs {${Object.keys(MODES)}} --url ...`);
  if (!values.url || !values.url.startsWith("ws://127.0.0.1:")) {
    fail("--url must be a ws://127.0.0.1:PORT/... address (the benchmark stays on loopback)");
  }
  const options = { url: values.url };
  for (const [name, value] of Object.entries(values)) {
    if (name === "url" || name === "transport") continue;
    const number = Number(value);
    if (!Number.isFinite(number) || number < 0) fail(`--${name} must be a number >= 0`);
    options[name] = number;
  }
  if (!Number.isInteger(options["local-addresses"]) || options["local-addresses"] < 1) {
    fail("--local-addresses must be a whole number >= 1");
  }
  localAddresses = Math.min(options["local-addresses"], 254);
  if (!["ws", "socketio"].includes(values.transport)) fail("--transport must be ws or socketio");
  if (values.transport === "socketio" && positionals[0] !== "broadcast") {
    fail("--transport socketio is for broadcast mode");
  }
  transport = values.transport;
  handshakeTimeoutMs = options["handshake-timeout"] * 1000;
  await mode(options);
  process.exit(0);
}

main().catch((error) => fail(error.message));

// Drive a channels endpoint with the Centrifuge JavaScript SDK (npm `centrifuge`, on `ws`)
// and print what it observed, one JSON object per line (tests/test_centrifuge_sdks.py).
//
//   node drive.mjs SCENARIO_JSON        (or the scenario on stdin when there is no argument)
//
// A scenario: {"url", "token"?, "getToken"?: [tokens handed out by successive getToken
// calls], "cookie"?: "user=alice" (an HTTP header of the handshake), "channels"?: [subscribed
// at once], "actions"?: [...], "stdin"?: true (then more actions, one JSON object a line,
// are read from stdin after those), "deadline"?: ms (default 20000), "minReconnectDelay"?}.
// Actions ({"do": ...}): "subscribe" {channels}, "until" {event, count?, channel?, ms?}: wait
// until `count` events of that kind (on that channel) were seen since the start, "publish"
// {channel, data}, "presence" / "presenceStats" {channel}, "history" {channel, limit?, since?,
// reverse?}, "unsubscribe" {channel}, "send" {data} (an asynchronous message to the server),
// "sleep" {ms}, "mark" {name} (printed, for the test to sync on), "disconnect", "exit".
// Lines printed: {"event": "connecting"|"connected"|"disconnected"|"error"|"getToken"|
// "subscribing"|"subscribed"|"unsubscribed"|"sub_error"|"publication"|"join"|"leave"|
// "result"|"failed"|"timeout"|"mark"|"deadline"|"done", ...}. The process always ends by
// itself: after the actions (and stdin) are done, or at the deadline (exit status 2).
import { createInterface } from "node:readline";
import { Centrifuge } from "centrifuge";
import WebSocket from "ws";

const text = process.argv[2] ?? (await readAll(process.stdin));
const scenario = JSON.parse(text);
const counts = new Map();
const waiters = new Set();
const subscriptions = new Map();

function emit(event, fields = {}) {
  process.stdout.write(`${JSON.stringify({ event, ...fields })}\n`);
  for (const key of [event, `${event} ${fields.channel ?? ""}`]) {
    counts.set(key, (counts.get(key) ?? 0) + 1);
  }
  for (const waiter of waiters) waiter();
}

async function readAll(stream) {
  let all = "";
  for await (const chunk of stream) all += chunk;
  return all;
}

const deadline = setTimeout(() => {
  emit("deadline", { ms: scenario.deadline ?? 20000 });
  process.exit(2);
}, scenario.deadline ?? 20000);

let transport = WebSocket;
if (scenario.cookie) {
  const cookie = scenario.cookie;
  transport = class extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols, { headers: { Cookie: cookie } });
    }
  };
}
const handedOut = [...(scenario.getToken ?? [])];
let getTokenCalls = 0;
const options = {
  websocket: transport,
  timeout: 5000,
  minReconnectDelay: scenario.minReconnectDelay ?? 100,
  maxReconnectDelay: 1000,
};
if (scenario.token) options.token = scenario.token;
if (scenario.getToken) {
  options.getToken = async () => {
    getTokenCalls += 1;
    emit("getToken", { call: getTokenCalls });
    return handedOut.shift() ?? "";
  };
}
const client = new Centrifuge(scenario.url, options);
client.on("connecting", ({ code, reason }) => emit("connecting", { code, reason }));
client.on("connected", ({ client: id, data }) => emit("connected", { client: id, data }));
client.on("disconnected", ({ code, reason }) => emit("disconnected", { code, reason }));
client.on("error", ({ type, error }) => emit("error", { type, code: error.code, message: error.message }));

function subscribe(channel) {
  const sub = client.newSubscription(channel);
  subscriptions.set(channel, sub);
  sub.on("subscribing", ({ code, reason }) => emit("subscribing", { channel, code, reason }));
  sub.on("subscribed", (ctx) =>
    emit("subscribed", {
      channel,
      recoverable: ctx.recoverable,
      positioned: ctx.positioned,
      wasRecovering: ctx.wasRecovering,
      recovered: ctx.recovered,
      streamPosition: ctx.streamPosition ?? null,
    }),
  );
  sub.on("unsubscribed", ({ code, reason }) => emit("unsubscribed", { channel, code, reason }));
  sub.on("error", ({ type, error }) =>
    emit("sub_error", { channel, type, code: error.code, message: error.message }),
  );
  sub.on("publication", (ctx) =>
    emit("publication", { channel, offset: ctx.offset ?? 0, data: ctx.data, info: ctx.info ?? null }),
  );
  sub.on("join", ({ info }) => emit("join", { channel, user: info.user, client: info.client }));
  sub.on("leave", ({ info }) => emit("leave", { channel, user: info.user, client: info.client }));
  sub.subscribe();
  return sub;
}

function until(action) {
  const key = action.channel === undefined ? action.event : `${action.event} ${action.channel}`;
  const count = action.count ?? 1;
  return new Promise((resolve) => {
    const check = () => {
      if ((counts.get(key) ?? 0) >= count) {
        waiters.delete(check);
        clearTimeout(timer);
        resolve();
      }
    };
    const timer = setTimeout(() => {
      waiters.delete(check);
      emit("timeout", { waited: key, count, seen: counts.get(key) ?? 0 });
      resolve();
    }, action.ms ?? 5000);
    waiters.add(check);
    check();
  });
}

async function call(action, promise, shape) {
  try {
    const result = await promise;
    emit("result", { action: action.do, channel: action.channel, ...shape(result) });
  } catch (error) {
    emit("failed", {
      action: action.do,
      channel: action.channel,
      code: error?.code ?? null,
      message: error?.message ?? String(error),
    });
  }
}

function subscription(channel) {
  return subscriptions.get(channel) ?? subscribe(channel);
}

async function perform(action) {
  switch (action.do) {
    case "subscribe":
      for (const channel of action.channels) {
        try {
          subscribe(channel);
        } catch (error) {
          emit("failed", { action: "subscribe", channel, code: null, message: error.message });
        }
      }
      return;
    case "until":
      return until(action);
    case "publish":
      return call(action, subscription(action.channel).publish(action.data), () => ({}));
    case "presence":
      return call(action, subscription(action.channel).presence(), (r) => ({ clients: r.clients }));
    case "presenceStats":
      return call(action, subscription(action.channel).presenceStats(), (r) => ({
        numClients: r.numClients,
        numUsers: r.numUsers,
      }));
    case "history": {
      const options = {};
      for (const name of ["limit", "since", "reverse"]) {
        if (action[name] !== undefined) options[name] = action[name];
      }
      return call(action, subscription(action.channel).history(options), (r) => ({
        epoch: r.epoch,
        offset: r.offset,
        publications: r.publications.map((p) => ({ offset: p.offset ?? 0, data: p.data })),
      }));
    }
    case "unsubscribe":
      subscription(action.channel).unsubscribe();
      return;
    case "send":
      return call(action, client.send(action.data), () => ({}));
    case "sleep":
      return new Promise((resolve) => setTimeout(resolve, action.ms));
    case "mark":
      emit("mark", { name: action.name });
      return;
    case "disconnect":
      client.disconnect();
      return;
    case "exit":
      return "exit";
    default:
      emit("failed", { action: action.do, code: null, message: "unknown action" });
  }
}

for (const channel of scenario.channels ?? []) subscribe(channel);
client.connect();
let stop = false;
for (const action of scenario.actions ?? []) {
  if ((await perform(action)) === "exit") {
    stop = true;
    break;
  }
}
if (scenario.stdin && !stop) {
  for await (const line of createInterface({ input: process.stdin })) {
    if (!line.trim()) continue;
    if ((await perform(JSON.parse(line))) === "exit") break;
  }
}
client.disconnect();
clearTimeout(deadline);
emit("done", { getTokenCalls });
process.exit(0);

"""The websocket backend, vendored into this project by ws-template.

Version 2.6.0. Every file in this folder is copied unchanged into each project that
ws-template generates, tests included, so that one fix reaches every project: change it
in the template, not here, and pull it in with ``cruft update`` (or by copying the folder).

- ``session.py``: the session helpers (`run_websocket`, `every`, `receive_json`, ...),
  written once against the few WebSocket methods they need.
- ``backend.py``: the FastAPI face: `create_router` plus the helpers.
- ``asgi.py`` and ``asgi_backend.py``: the framework-free face: a `WebSocket` over the raw
  ASGI triple, and a `Router` (the ASGI application) plus the helpers.
- ``broadcast.py``: the broadcast `Hub` interface, `MemoryHub`, bounded `Subscription`
  queues, and `run_broadcast`, which serves a broadcast connection on any face.
- ``redis_hub.py`` (projects with the Redis broadcast backend): `RedisHub`, the same hub on
  Redis (pub/sub, and a stream per channel for its history), across processes; and
  `ShardedRedisHub`, its channels spread over several Redis servers; ``redis_batch.py``:
  `CommandBatcher`, which pipelines a hub's commands to one Redis in batches;
  ``redis_sentinel.py``: `RedisTarget`, which connects a hub to a Redis URL or to the master
  of a Sentinel group (``redis+sentinel://``), and `follow_master`.
- ``centrifuge_protocol.py`` (projects with a ``channels`` endpoint): `run_channels`, which
  serves a connection of many channels in the Centrifuge client protocol (v2, JSON), so the
  Centrifuge SDKs are its clients; ``namespaces.py``, which channels exist and who may
  subscribe and publish; ``tokens.py``, connection and subscription tokens (JWT, with
  PyJWT); ``rpc.py``, the Python methods its clients call (``rpc``, ``send``);
  ``static.py``, `StaticFolder`, the files of a browser app on the service's origin.
- ``publish_api.py``: `PublishAPI`, ``POST /api/publish`` (to a channel or a user) and
  ``GET /api/presence`` for code outside the service.
- ``client.py``: `Client`, a Python client of the service on ``websockets`` that reconnects
  and resumes broadcast channels (``python -m <package>.client URL``).
- ``asyncapi.py``: `declares` and `Messages` (what an endpoint's clients send and what it
  sends them) and `document`, the AsyncAPI 3.0 document of the mounted endpoints.
- ``guard.py``: `WebSocketGuard`, the ASGI middleware that applies the service's policy to
  every connection (origin, authentication, size, rate, idle and slow-reader limits, logs),
  and tells a `GuardObserver` what happens.
- ``metrics.py`` (projects with metrics): `Metrics`, the guard's observer that keeps the
  Prometheus metrics, and `MetricsEndpoint`, ``GET /metrics``.
- ``workers.py``: `server_workers`, how many worker processes the server running this
  process was told to start (the app refuses several with a hub in memory).
- ``uvicorn_protocol.py``: `LeanProtocol`, uvicorn's websockets-sansio protocol holding less
  per connection, which the runner serves with (``--ws`` for uvicorn by hand).
- ``asgi_types.py``: the ASGI callable's types.
- ``testing.py``: `LiveServer` (an app on a real server), `ScriptedClient` and
  `RedisServer` (a real redis-server for tests).

A project keeps the face its framework uses.

2.6.0: a browser app served by the app itself, on the service's origin. ``static.py``
(projects with a ``channels`` endpoint): `StaticFolder`, the ASGI app that answers GET and
HEAD with a folder's files under a mount (the prefix in the scope's ``root_path``, as
Starlette's ``Mount`` passes it): a folder's path its ``index.html`` (without its last
``/``, a relative redirect to it), JavaScript modules with a JavaScript type whatever the
system's ``mimetypes`` holds, ``nosniff``; 404 for a hidden name (a dot first), ``..``, or
a symbolic link out of the folder. ``asgi_backend``: `Router.mount` (a prefix and every
path under it, every method, the prefix added to ``root_path``), and ``{name:path}`` route
parameters, which match the rest of a path.

2.5.0: tokens, RPC and personal channels on ``channels`` endpoints; pipelined Redis that
follows a Sentinel failover; fan-out straight from the hub's delivery, through a lane per
channel.

Tokens and RPC. Token lifetimes: a connection token with
``exp`` gives ``expires`` and ``ttl`` in the connect reply, ``refresh`` renews it, and a
connection not renewed by ``exp`` plus ``ChannelsConfig.expired_close_delay`` (25 s, as
Centrifuge) is closed with 3005 "connection expired" (the SDKs reconnect with a new token);
a refresh with an expired token closes with 3005, one for another user or key with 3500.
Subscription tokens: `namespaces.TOKEN` (``Allow.TOKEN``), a subscribe rule that needs a
subscription token for the channel and the connection's user; a token sent to a namespace
with another rule is verified too but grants nothing (`ChannelRequest.token`: its claims,
for rule functions). Expired, error 109; signed with no key of the service, 103; for another
channel, user or connection (its ``client`` claim), a close with 3500; ``sub_refresh``
renews one (expired: 110), and a subscription not renewed in time gets an ``unsubscribe``
push 2501 "subscription expired". ``tokens.py``: `TokenSigner` (mints HS256 connection and
subscription tokens), `TokenVerifier.verify_subscription`, `TokenMismatch`. RPC:
``rpc.py``, `RpcMethods` (``@methods.method(name, params=..., result=...)``,
``@methods.on_send``), `RpcRequest`, `RpcError` (codes 400-1999); ``ChannelsConfig.rpc``;
an unknown method is 104, data that fails the ``params`` schema 107 (jsonschema, now a
dependency of projects with a channels endpoint), a method's `RpcError` its code and
message, any other exception 100 with one log line (the connection goes on); ``send``
reaches the send handler, with no reply (without one, the connection is closed with 3508,
as Centrifuge's server does); ``RpcRequest.hub`` is the endpoint's hub (to read a
channel's history, say). ``asyncapi.channels_endpoint(rpc)`` lists the
methods with their schemas; `asyncapi.CHANNELS_ENDPOINT` declares refresh, sub_refresh,
subscription tokens and lifetimes. Upgrading: a hand-written `Namespace` rule that checked
``rule is ...`` for each `Allow` must handle ``TOKEN``; ``ChannelRequest`` gained a field
(``token``, last, defaulting to None).

Personal channels and the reconnect storm: `Namespace(personal=True)`
subscribes every connection with a user, at connect, to its user's channel of that
namespace (``user:#alice``; `Namespaces.personal_channels`): a server-side subscription
in the connect reply's ``subs``, recovered through the client's ``connect.subs``, its
publications pushed on that channel; the client cannot unsubscribe from it (103), and one
that missed messages it cannot be sent closes the connection with 3010 (the SDK reconnects
and recovers). Such a connection no longer listens to ``message`` pushes: what is sent to
its user reaches it on the personal channel, once and recoverable. `publish_api.send_to_user`
(and ``POST /api/publish`` with a ``user``, whose answer now lists ``channels`` with their
positions) publishes to the user's personal channels and sends the direct message to their
other connections. Join and leave events stop on a channel of more than
``join_leave_limit`` clients (`MemoryHub`, `RedisHub`, `ShardedRedisHub`; default 100;
`Hub.announces`), so N clients reconnecting at once no longer cost N squared events; the
Redis hub counts a channel's presence in its join and leave scripts (their arguments
gained the limit: a 2.4 process on the same Redis runs its own, and still sends the events
of its clients past the limit), and delivers an event only while the process has at most
the limit of subscribers of the channel. `Fanout.count` gives a channel's local
subscriptions. Upgrading: a personal `Namespace` must keep its channels to
their user (``subscribe=USER_LIMITED`` or ``NOBODY``); a client of a personal namespace's
endpoint that read ``message`` pushes reads publications of its personal channel instead.
A pong (or a connect) that waits behind a frame the server is still answering is no longer
taken for a dead client: the ping task gives the reader `centrifuge_protocol.CATCH_UP`
(1 s) after its last answer before closing with 3012 (or 3502); in a reconnect storm on
Redis, frames of ten subscriptions took over 20 s to answer, and their clients were closed.

Redis: `RedisHub` pipelines its commands:
publishes, history reads and presence updates go through one `redis_batch.CommandBatcher`
per Redis (one connection, one batch out at a time; a lone command is written at once, those
asked for meanwhile go together in the next write, scripts by ``EVALSHA``, reloaded on
``NOSCRIPT``; a failed batch fails each of its callers and is never sent again), and its
``SUBSCRIBE``/``UNSUBSCRIBE`` commands name up to 512 channels each. At 100 publishes in
flight that halved Redis's CPU per publish and cut the service's to a third
(``bench/redis_batching.py``). It also ends the refusals of a burst: redis-py 8.1's default
pool refused the commands past 100 in flight, so 1,000 publishes at once from one process
failed by the thousands. Redis 7.0.6 or later is supported (tested on 7.0.15).
A failed publish says whether it may have been published: a command written to Redis whose
reply never came (the connection broke, or no answer within the timeout) fails with
`redis_batch.Unanswered`, and the hub's `HubUnavailable` then has ``maybe_published=True``
and says "the message may have been published (it was sent, but no answer came); sending it
again may publish it twice" (`redis_hub.MAYBE_PUBLISHED`; Redis killed mid-burst had run
about half of such publishes); one never written fails with `redis_batch.NotSent` and
"the message was not sent; try again later" (`redis_hub.NOT_SENT`), as before. A command
whose caller gave up before it was written is never written (before, one given up while its
batch was connecting was written once the connection was made). Each batcher call waits its
``timeout`` at most (the hub no longer wraps it in its own), and the connection is checked
for a close by Redis before every batch (it was after a second idle: a publish just after
a Redis stop was written to the closed connection). Upgrading: code that retried
every `HubUnavailable` of a publish should look at ``maybe_published`` first.
On Python 3.11 a cancellation can be lost in redis-py's writes (`asyncio.wait_for` returns
a result that completes in the same turn as the cancellation: python/cpython#86296). Two
hangs came of it and are gone: `RedisHub.close` cancels its tasks again until they end (a
connection task cancelled while writing a PING went on listening, and close waited for it
for good), and a batch whose time runs out during its write gives up before reading the
replies (written to a frozen Redis, it waited for them for good).

Redis failover: a hub's URL may name a Sentinel group
(``redis+sentinel://HOST:26379,HOST2:26379/MASTER_NAME[/DB]``; `redis_sentinel.split_redis_urls`
keeps a group's sentinels together in a list of shards, `redis_sentinel.redis_url_problem`
says what is wrong with one): its connections ask the sentinels for the master whenever they
connect, and `follow_master` moves every second those left on another node. A `RedisHub`
remembers each channel's highest position seen (published, heard, read; 100,000 channels at
most) and passes it to the publish and read scripts, which start a new epoch for a channel
Redis has gone back on (a promoted replica that lacked the last publishes): its offsets are
never given twice in one epoch. ``RedisHub(..., wait_replicas=N)`` (and `ShardedRedisHub`)
makes each publish wait for N replicas (``WAIT`` once per batch; `redis_batch.NotReplicated`
when fewer confirm, a `HubUnavailable` for the caller); ``CommandBatcher.call(...,
durable=True)``.

Fan-out: where the server can send a text at once (the ASGI scope extension
`session.SEND_TEXT_NOW`, which `LeanProtocol` offers; the guard wraps it to count what it
sends and to stop once it has closed; `session.server_sender` finds it), a broadcast
connection is served by one task, which reads the client, and each text queued for it is
written from the hub's delivery at once: one ``transport.write`` of a frame built once per
message, no task woken (`Subscription.attach` takes any `broadcast.Reader`; ``_Relay``).
A text that cannot be written at once (a slow reader, a close under way) starts a task that
sends it and what follows, in order, waiting as a send does: the bounded queue, ``dropped``
notices, the send timeout and the counts are unchanged. Elsewhere (other servers) the two
tasks of before serve. Where the server also offers direct writes (`session.WRITE_DIRECT`,
`LeanProtocol`'s: a `session.DirectLink` of the connection's transport, whose
`session.LinkStop` it tells at every place where a text could no longer be written at once:
flow control, a close either way, the keepalive's timeout, shutdown, loss; the guard wraps
it to count through `guard.Tally.count_many` and tells the stop when it closes;
`session.server_direct` finds it), a broadcast subscription that has sent all it had queued
joins its channel's `broadcast.Lane`, which writes each message of the channel as one
``write`` of one frame per member, with no queue, wake, check or count per subscriber: the
position, the guard's counts, the hub's deliveries and the lag samples are kept once per
message. A member goes back to its queue when its link stops, when its relay must queue a
text, when the hub holds or ends it, or when a message does not follow the lane's position
(every member then, the message queued with the usual gap and duplicate checks);
`Subscription.go_direct`, `Subscription.leave_lane`, `Subscription.in_lane`.
`testing.ScriptedClient(writes_direct=...)` offers links too (the ``delivery_path`` fixture
has a third path, ``lane``). A subscribed connection holds about 4 KiB less. The closures that
read a broadcast client are made once per channel, not per connection. `run_websocket`'s
`session.cancel_and_wait` is public. `testing.ScriptedClient(sends_now=...)` offers the
extension too (`ScriptedClient.sends_now_by_default`: the tests' ``delivery_path`` fixture
runs the broadcast, guard and metrics tests and the hub contract on every path);
`guard.Tally.count_text`. orjson (a dependency of the project now) reads a client's JSON
object whose values are strings, 64-bit integers, booleans or null, and writes the answer to
a keepalive made of them (`session.dumps_parsed`): about 4% fewer instructions per keepalive
round trip (bench/run.py --workloads instructions); anything else (floats, nesting, longer
integers, an error) goes through json as before, so every text sent is json's, byte for byte.
The raw-ASGI `WebSocket` has slots (a subscribed connection holds less). Upgrading: code
that set attributes of its own on an `asgi.WebSocket` cannot any more.

Memory per connection: `LeanProtocol` keeps uvicorn's attributes in slots (uvicorn's 37
overflowed the dictionary a class shares between its objects: 1.6 KiB each), sends the
keepalive pings of every connection on an event loop from one `uvicorn_protocol.PingClock`
(a ``TimerHandle`` each was 0.6 KiB; a ping goes at the time uvicorn sets, a missed pong
still closes with 1011), reads its `Inbox` in ``receive`` itself (``Inbox.arrival``,
``Inbox.forget``; one coroutine less per waiting connection; a lone waiting reader is held
without a list), and holds once what connections have alike: the server's address,
uvicorn's permessage-deflate factory, the empty headers an answered handshake request
keeps (`uvicorn_protocol.NO_HEADERS`), and the request-header pairs clients send alike
(`uvicorn_protocol.shared_headers`: ``host``, ``upgrade``, ``user-agent``, ... in
`uvicorn_protocol.SHARED_HEADER_NAMES`, never a key, a cookie or a credential; at most
`uvicorn_protocol.MAX_SHARED_HEADERS` pairs). The ASGI scope a handler sees is unchanged
but for one thing: the ``(name, value)`` tuples of ``scope["headers"]`` (equal to before,
immutable) may be the same objects in several connections' scopes. `create_router`'s
route returns its handler's coroutine for Starlette to await (no frame of its own), and
`receive_json`'s loop holds no bound methods. A subscribed connection of one room (10,000
on the memory hub, uvicorn with `LeanProtocol`) holds 3.7 KiB less in the fastapi flavour
(22.3 -> 18.6 KiB of RSS, 1.25x the ``websockets`` server's) and 3.5 KiB less in the asgi
one (15.6 -> 12.1 KiB, 0.81x; docs/benchmarks.md, "Memory per subscribed connection").
Upgrading: a subclass of `LeanProtocol` that sets attributes of its own still can (they go
to its dictionary). A keepalive's answer goes out through `SEND_TEXT_NOW` where the server
offers it (while the face is in its accepted state), as a broadcast does: about 12% fewer
instructions per keepalive round trip. And where the server hands text messages over as they
are read (`session.RECEIVE_DIRECT`, `LeanProtocol`'s: a `session.TakeText` of the app's is
given each whole text message in the read callback while nothing is queued, until it
refuses one or something else is queued; the guard wraps it to check and count each message
first and has one that would fail a check queued for its ``receive``;
`session.server_listener` finds it), `receive_json`'s task waits on the hand-over and a
keepalive is answered right there: no task woken, no ASGI message made, and reading not
paused for it (uvicorn pauses reading while a message is queued). Anything else (another
message, a binary frame, an answer that cannot be sent at once) is queued and read by the
task in order. Instructions per keepalive round trip (callgrind, 10 connections): 99.4k ->
73.0k (fastapi), 96.4k -> 72.6k (asgi), 0.85x the same-work ceiling's 86.0k.
`testing.ScriptedClient(hands_over=...)` offers it too (the ``lane`` delivery path does).
A ``channels`` connection's publications (and messages to its user) are sent at once from
the hub's delivery where the server offers `SEND_TEXT_NOW`, as a broadcast's are: the
connection is its subscriptions' `broadcast.Reader`, and its writer task sends only what
cannot go at once and what follows it, in order (`broadcast.Inbox.pending`).

2.4.0: ``channels`` endpoints (`centrifuge_protocol.run_channels`, `namespaces`, `tokens`).
For them the hub gained what a connection of many channels needs, without learning the
protocol: ``Hub.publish(..., info=...)`` puts who published a message in its envelope
(``"info"``, before ``"message"``), ``Hub.subscribe(..., client_id=...)`` names a
connection once for all its channels, ``Hub.history(channel, since)`` reads a channel's
history, an `Inbox` lets one task read many subscriptions (`Subscription.attach`,
`Subscription.poll`), and ``Hub.use_channel_options`` lets some channels keep another
history size or TTL, or no presence or join and leave events (`ChannelOptions`,
``Hub.kept``; a namespace gives them for its channels). ``Hub.listen_to_user`` tells a
listener (a connection of many channels) each message to its user once, and
``Hub.subscribe(..., direct=False)`` makes a subscription that does not get them. A
`Subscription` holds less (slots,
a list for its queue: about 680 bytes live, was 1,440). Metrics: ``Metrics.watch_channels``
(``channels_*``). `testing.ScriptedClient.resume_reading` undoes ``stop_reading``. ``run_broadcast(...,
publish=False)`` serves a receive-only broadcast channel.
Several workers: each flushes its metrics every second from the start once it watches a hub
(`Metrics.watch_hub`), not from its first connection, so ``broadcast_redis_up`` reads 1 within
a second of every worker connecting to Redis (it read 0 until a scrape had reached each).
`PublishAPI` refuses (422) a channel no client can be on: a query string, an unfilled
``{name}``, a percent-escape (clients are on decoded paths: ``/ws/rooms/café``); its 422 names
the broadcast endpoints' paths, the namespaces and the mistake (`ChannelNamespaces.names`).
`publish_api.add_to_openapi` puts ``POST /api/publish`` and ``GET /api/presence`` (request
and answer schemas, the bearer key) in an OpenAPI document: the FastAPI app's ``/openapi.json``.
``run_broadcast(..., on_message=hook)``: a `MessageHook` sees each message a client sends
on a broadcast endpoint, with the connection (its ``scope["user"]``), and gives the message
to publish, changed or not, or raises `broadcast.Refused`, whose sentence the client gets as
an ``error``; the generated ``endpoints.py`` wires one, ``stamp_sender``, that sets the
message's ``user`` to the sender's identity (removed for an anonymous sender), so nobody can
forge it. ``?last=N`` on a broadcast endpoint starts with the channel's last N messages
the history holds (`broadcast.last_of`, `broadcast.start_of_last`: the subscribed notice
gives the position before the first of them, with ``recovered``), on every hub; with
``since`` it is refused (1008); when the history cannot be read, an ``error`` and a close
with 1013. ``asyncapi.py`` declares ``last`` in the broadcast endpoints' query.
`client.Client(..., last=N)` and ``python -m <package>.client --last N`` start with them,
then resume from the position as before.
Upgrading: every hub keeps its old calls; a hub written outside this package must add
``history``, ``listen_to_user`` and ``unlisten_to_user`` (abstract) and accept the new
keywords; code that set attributes of its own on
a `Subscription` cannot any more (slots).

2.3.1: a client's close that crosses a reply is logged (and counted in
``websocket_connections_closed_total``) with the client's code. A client that sends a message
and closes at once made the reply's send fail before the session read the close, and the
close was logged with no code: the guard now reads the server's disconnect event once such a
send has failed (`guard.CLOSE_CODE_WAIT`, at most 1 s). `Subscription.next` waits on a bare
future instead of an ``asyncio.Event`` (8% fewer instructions per broadcast delivery, and
11 MiB less with 10,000 subscribers); it has one reader at a time, and a second call while
one waits raises RuntimeError.

2.3.0: less memory per idle connection, and less work per broadcast delivery. The runner
serves with `uvicorn_protocol.LeanProtocol`: uvicorn's websockets-sansio protocol with a
smaller event queue and writable flag, the handshake's request and response let go once
answered, and a text frame built once for the subscribers a broadcast sends the same text to
(uvicorn by hand: ``--ws <package>.websocket.uvicorn_protocol:LeanProtocol``; without it, all
works as before). `testing.LiveServer` starts uvicorn with it where the app's package has it
(`testing.LEAN_PROTOCOL`). Metrics cost less per broadcast delivery: `BroadcastStats.deliveries`
is read-only, worked out from the lag-sample countdown that counts live sends, and
`Tally.messages_sent` and ``bytes_sent`` are read-only, a text object sent again only stepping
``Tally.repeats``.

2.2.0: presence and per-user delivery. A `Subscription` has a random ``client_id`` (in the
``subscribed`` notice) and the ``user`` auth.py returned (`presence_user`);
`Hub.subscribe(channel, since, user=...)`, `Hub.presence(channel) -> Presence` (``count``,
``clients`` up to ``presence_limit``, ``cut``; `PresenceOff` when off) and
`Hub.publish_to_user(user, message)` (``{"type": "direct", ...}`` to each connection of
the user); join and leave events (``join_leave``). `MemoryHub` and `RedisHub` take
``presence``, ``join_leave``, ``presence_limit`` (and Redis ``presence_ttl``: each process
renews its clients every third of it; a SIGKILLed process's clients expire within it, with no
leave event). ``{"type": "presence"}`` is answered by `receive_json(handle, presence=...)`,
with a one-sentence error on endpoints without presence; `PublishAPI` serves
``GET /api/presence`` and ``POST /api/publish`` with a ``user``; the client's `Presence`,
`PresentClient`, `Join`, `Leave` and `Direct` types. Upgrading: a 2.1 process on the same
Redis lists none of its clients in presence, receives no direct messages and logs a warning
for each join or leave event (it takes them for messages without a position); run 2.2.0
everywhere, or use a new ``REDIS_CHANNEL_PREFIX``. `testing.LiveServer` runs its server in
a process group of its own: `LiveServer.kill` SIGKILLs it with its workers (hypercorn's
outlive their parent), and `stop` kills what is left, so it no longer waits forever on a log
that an orphaned worker keeps open.

2.1.2: the terminal client (``python -m <package>.client``) goes on printing for
``--linger`` seconds (1) after its input ends, so piped lines get their replies printed.

2.1.1: less memory per idle connection. `create_router` mounts Starlette's ``WebSocketRoute``
(not FastAPI's ``APIWebSocketRoute``: its dependency solving and wrappers cost about 5 KiB
per connection); its endpoint puts its path template in ``scope["route"]`` itself (an object
whose ``path`` is the template, include prefixes too), which the metrics label by; FastAPI
dependencies given to ``include_router(..., dependencies=...)`` no longer run for it. The guard
watches every connection with one `Watchdog` timer per event loop instead of a timer each:
an idle or send-timeout deadline near another connection's is met at most
``min(send_timeout, idle_timeout) / 10`` late, and while a send is under way the client is
judged by the send timeout, not the idle one. `Router` and `run_websocket` keep a coroutine
frame less per connection.

2.1.0: `WebSocketGuard(observer=...)`: a `GuardObserver` hears of refusals (by reason),
opens and closes (code, and the limit if the guard closed), and gets a `Tally` per endpoint
that the guard counts messages, bytes and error replies in; `Router` puts the `Route` that
took a request in ``scope["route"]`` (its ``path`` is the template, as in Starlette);
`Hub.count_in(BroadcastStats())` has a hub count publications, deliveries, drops,
recoveries, delivery lag and (Redis) its connection in plain counters;
`Publication.published_ns`; ``metrics.py``. `workers.server_workers` (the project refuses
to start a memory hub with several workers); `redis_hub.ShardedRedisHub`, channels spread
over several independent Redis servers by a consistent hash of their name (`shard_index`),
and `redis_hub.redis_hub(urls)`, which makes a `RedisHub` for one URL and a
`ShardedRedisHub` for several; `Hub.parts` (a sharded hub's shards, for metrics);
``asyncapi.py``, `backend.websocket_routes` and `Router.websocket_routes` (what
``GET /asyncapi.json`` describes); the client's message types and `client.service_message`.

2.0.0: broadcast channels have positions and history. Every message gets its channel's next
``offset`` and the channel's ``epoch`` (in deliveries, and in the ``subscribed`` and
``dropped`` notices, which now carry the position); `Hub.publish(channel, message)` takes the
message object and returns its `Position` (was: a text, returning None);
`Hub.subscribe(channel, since)` and ``?since=&epoch=`` resume after a position from the
history (``history_size``, ``history_ttl``); `RedisHub` publishes with a Lua script and
fills the gaps of a lost connection from the history; `PublishAPI`; `hub_of` takes a request
or a scope too; `Router.add_http_route` takes ``methods=None`` (every method);
`testing.RedisServer(keep_data=True)`, `LiveServer.restart()`; `client.Client`. Upgrading: all processes on one Redis must run 2.0.0
(a 1.x process's plain ``PUBLISH`` is ignored by 2.0.0 ones, with a warning), or use a new
``REDIS_CHANNEL_PREFIX``.

1.2.0: JSON through json's C parts directly (`session.loads`/`session.dumps`, the bytes of
``json.loads``/``json.dumps`` with the same options); a one-task session runs in the
caller's task; `create_router` mounts a handler of one ``WebSocket`` parameter as it is;
the guard holds less per connection; `RedisHub` subscribes in constant time;
`testing.RedisServer` has a ``pid``.
"""

__version__ = "2.3.0"

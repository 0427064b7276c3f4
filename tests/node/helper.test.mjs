// Unit tests of the client helper (asgi_resume/static/asgi-resume.js), under Node's test runner,
// against a stand-in socket whose resume answers the tests give by hand.
import { test } from "node:test";
import assert from "node:assert/strict";
import { resumable, defaultIsDone } from "../../asgi_resume/static/asgi-resume.js";

class Storage {
  constructor(data = {}) { this.data = new Map(Object.entries(data)); }
  getItem(key) { return this.data.has(key) ? this.data.get(key) : null; }
  setItem(key, value) { this.data.set(key, String(value)); }
  saved() { return JSON.parse(this.getItem("asgi-resume") ?? "{}"); }
}

class FakeSocket {
  constructor() { this.listeners = new Map(); this.connected = false; this.requests = []; }
  on(event, fn) { (this.listeners.get(event) ?? this.listeners.set(event, []).get(event)).push(fn); }
  off(event, fn) { this.listeners.set(event, (this.listeners.get(event) ?? []).filter((f) => f !== fn)); }
  fire(event, ...args) { for (const fn of this.listeners.get(event) ?? []) fn(...args); }
  connect() { this.connected = true; this.fire("connect"); }
  timeout() {
    return {
      emitWithAck: (event, request) =>
        new Promise((resolve, reject) => this.requests.push({ event, request, resolve, reject })),
    };
  }
  /** Answer the oldest pending resume: first the replayed frames, then the ack (as the server does). */
  async answer(answer, replay = []) {
    const pending = this.requests.shift();
    assert.ok(pending, "no resume was asked");
    for (const frame of replay) this.fire("events", frame);
    pending.resolve(answer);
    await new Promise((r) => setImmediate(r));
    return pending.request;
  }
}

const frame = (seq, content = `t${seq}`, extra = {}) => ({
  message_id: "m", seq, epoch: "E1", data: { type: "chat:completion", data: { content, ...extra } },
});
const ok = (extra = {}) => ({ ok: true, replayed: 0, last_seq: 0, oldest_seq: 1, epoch: "E1", done: false, gap: false, ...extra });

function setup(options = {}) {
  const socket = new FakeSocket();
  const storage = options.storage ?? new Storage();
  const seen = [];
  const gaps = [];
  const streams = resumable(socket, { storage, fenceTimeout: 50, onGap: (id, a) => gaps.push([id, a]), ...options });
  streams.on("events", (e) => seen.push(e.seq ?? e));
  return { socket, storage, seen, gaps, streams };
}

test("delivers each frame once, in order, and remembers lastSeq and epoch", () => {
  const { socket, storage, seen } = setup();
  for (const seq of [1, 2, 2, 3, 1]) socket.fire("events", frame(seq));
  assert.deepEqual(seen, [1, 2, 3]);
  assert.equal(storage.saved().m.seq, 3);
  assert.equal(storage.saved().m.epoch, "E1");
});

test("frames that are not stream frames pass as they come", () => {
  const { socket, seen } = setup();
  socket.fire("events", { hello: 1 });
  socket.fire("events", { message_id: "m", note: "sent while the log was down" });
  assert.deepEqual(seen, [{ hello: 1 }, { message_id: "m", note: "sent while the log was down" }]);
});

test("after a reload it resumes from the stored lastSeq and holds live frames until the answer", async () => {
  const storage = new Storage({ "asgi-resume": JSON.stringify({ m: { seq: 4, epoch: "E1", at: 1 } }) });
  const { socket, seen } = setup({ storage });
  socket.connect();
  assert.deepEqual(socket.requests.map((r) => r.request), [{ message_id: "m", last_seq: 4, epoch: "E1" }]);
  socket.fire("events", frame(8)); // live frames race the replay
  socket.fire("events", frame(9));
  assert.deepEqual(seen, []);
  await socket.answer(ok({ replayed: 4, last_seq: 8 }), [frame(5), frame(6), frame(7), frame(8)]);
  assert.deepEqual(seen, [5, 6, 7, 8, 9]);
});

test("resume from the start for a stream the page learned of from its API", async () => {
  const { socket, seen, streams } = setup();
  socket.fire("events", frame(3)); // a live frame: the page joined mid-stream
  const answered = streams.resume("m", { fromStart: true });
  assert.deepEqual(socket.requests[0].request, { message_id: "m", last_seq: 0, epoch: "E1" });
  await socket.answer(ok({ replayed: 3, last_seq: 3 }), [frame(1), frame(2), frame(3)]);
  assert.equal((await answered).ok, true);
  // fromStart delivers the stream again from its first frame: the page renders the message anew
  assert.deepEqual(seen, [3, 1, 2, 3]);
});

test("a hole in seq is asked for again and filled in order", async () => {
  const { socket, seen } = setup();
  socket.fire("events", frame(1));
  socket.fire("events", frame(4));
  assert.deepEqual(socket.requests[0].request, { message_id: "m", last_seq: 1, epoch: "E1" });
  await socket.answer(ok({ replayed: 3, last_seq: 4 }), [frame(2), frame(3), frame(4)]);
  assert.deepEqual(seen, [1, 2, 3, 4]);
});

test("a hole that resumes cannot fill is accepted and reported", async () => {
  const { socket, seen, gaps } = setup();
  socket.fire("events", frame(1));
  socket.fire("events", frame(4));
  await socket.answer(ok());
  await socket.answer(ok());
  assert.deepEqual(seen, [1, 4]);
  assert.equal(gaps.at(-1)[1].reason, "hole");
});

test("a gap is reported and the replay is taken from the oldest seq held", async () => {
  const { socket, seen, gaps, streams } = setup();
  socket.fire("events", frame(1));
  socket.connect();
  await socket.answer(ok({ gap: true, oldest_seq: 50, last_seq: 51, replayed: 2 }), [frame(50), frame(51)]);
  assert.deepEqual(seen, [1, 50, 51]);
  assert.equal(gaps.length, 1);
  assert.equal(streams.state("m").seq, 51);
});

test("a new epoch starts the stream's seq again and is reported", async () => {
  const { socket, seen, gaps } = setup();
  socket.fire("events", frame(1));
  socket.fire("events", { ...frame(1), epoch: "E2" });
  socket.fire("events", { ...frame(2), epoch: "E2" });
  assert.deepEqual(seen, [1, 1, 2]);
  assert.equal(gaps[0][1].reason, "epoch");
});

test("not_found is reported so the app can reload from its backend", async () => {
  const { socket, gaps, streams } = setup();
  const answer = streams.resume("unknown");
  await socket.answer({ ok: false, error: "not_found" });
  assert.deepEqual((await answer).error, "not_found");
  assert.equal(gaps[0][0], "unknown");
});

test("the fence opens by itself when no answer comes", async (t) => {
  t.mock.timers.enable({ apis: ["setTimeout"] });
  const { socket, seen } = setup({ fenceTimeout: 1000 });
  socket.fire("events", frame(1));
  socket.connect();
  socket.fire("events", frame(2));
  assert.deepEqual(seen, [1]);
  t.mock.timers.tick(1000);
  assert.deepEqual(seen, [1, 2]);
});

test("finished streams are forgotten; storage stays bounded", () => {
  const { socket, storage } = setup({ maxStreams: 3 });
  for (const id of ["a", "b", "c", "d", "e"]) socket.fire("events", { ...frame(1), message_id: id });
  assert.deepEqual(Object.keys(storage.saved()).length, 3);
  socket.fire("events", { ...frame(2, "", { done: true }), message_id: "e" });
  assert.equal("e" in storage.saved(), false);
});

test("a finished stream is not resumed on reconnect", () => {
  const { socket } = setup();
  socket.fire("events", frame(1));
  socket.fire("events", frame(2, "", { done: true }));
  socket.connect();
  assert.deepEqual(socket.requests, []);
});

test("done rules match the server's defaults", () => {
  assert.equal(defaultIsDone({ data: { type: "chat:completion", data: { done: true } } }), true);
  assert.equal(defaultIsDone({ data: { type: "status", data: { done: true } } }), false);
  assert.equal(defaultIsDone({ data: { type: "chat:tasks:cancel" } }), true);
  assert.equal(defaultIsDone({ data: { type: "chat:active", data: { active: false } } }), true);
  assert.equal(defaultIsDone({ done: true }), true);
});

test("a resume asked before the socket connects is not asked twice", async () => {
  const storage = new Storage({ "asgi-resume": JSON.stringify({ m: { seq: 4, epoch: "E1", at: 1 } }) });
  const { socket, streams, seen } = setup({ storage });
  streams.resume("m", { fromStart: true }); // the page asks before its socket is connected
  socket.connect();
  assert.equal(socket.requests.length, 1);
  await socket.answer(ok({ replayed: 2, last_seq: 2 }), [frame(1), frame(2)]);
  assert.deepEqual(seen, [1, 2]);
});

test("a resume lost with a dropped connection is asked again on the next one", async () => {
  const { socket } = setup();
  socket.fire("events", frame(1));
  socket.connect(); // resume #1 goes out on this connection...
  socket.connect(); // ...which drops before the answer: the new connection asks again
  assert.equal(socket.requests.length, 2);
});

test("views for other audiences keep seqs of their own and are resumed by name", async () => {
  const shared = (seq) => ({ ...frame(seq, `view${seq}`), epoch: "E2", shared: true });
  const storage = new Storage();
  const { socket, seen } = setup({ storage, variantField: "shared" });
  for (const f of [frame(1), shared(1), frame(2), frame(3), shared(2), shared(2)]) socket.fire("events", f);
  assert.deepEqual(seen, [1, 1, 2, 3, 2]); // each view once, in its own order
  const { socket: reloaded } = setup({ storage, variantField: "shared" });
  reloaded.connect();
  // (asked most recently active first: the order depends on the clock's milliseconds, not compared)
  const byVariant = (a, b) => (a.variant ?? "").localeCompare(b.variant ?? "");
  assert.deepEqual(
    reloaded.requests.map((r) => r.request).sort(byVariant),
    [
      { message_id: "m", last_seq: 3, epoch: "E1" },
      { message_id: "m", last_seq: 2, epoch: "E2", variant: "true" },
    ],
  );
});

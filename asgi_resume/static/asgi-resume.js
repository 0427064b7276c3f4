// asgi_resume client helper: resumable Socket.IO streams in the browser (an ES module, no build step).
//
//   import { resumable } from "/socket.io/asgi-resume.js";       // served by the middleware
//   const streams = resumable(socket, { onGap: (id) => reloadMessage(id) });
//   streams.on("events", render);                                 // instead of socket.on("events", render)
//   streams.resume(messageId, { fromStart: true });               // a stream the page learned of from its API
//
// Per stream it keeps lastSeq and epoch in sessionStorage (they survive a reload) and delivers each
// frame once, in seq order. On every (re)connect it resumes the streams still in flight; while a
// stream's resume is being answered its live frames wait (up to `fenceTimeout`); when seq skips a
// number it asks again from the hole. Finished streams are forgotten. Frames without seq (not part
// of a stream, or sent while the server's log was down) are delivered as they come.
//
// Views of one stream sent to different audiences (ASGI_RESUME_VARIANT, e.g. open-webui's `shared`)
// have seqs of their own: with `variantField` set, the helper keeps one state per (stream, view)
// and names the view in its resume requests.

const DEFAULTS = {
  streamField: "message_id", // the stream id's field in an event's first argument (ASGI_RESUME_STREAM_ID)
  variantField: null, // the field that names a view (ASGI_RESUME_VARIANT), e.g. "shared" for open-webui
  resumeEvent: "resume-stream", // ASGI_RESUME_RESUME_EVENT
  storage: typeof sessionStorage === "undefined" ? null : sessionStorage,
  storageKey: "asgi-resume",
  fenceTimeout: 5000, // ms a stream's live frames wait for its resume to be answered
  maxStreams: 100, // streams remembered, the most recently active first
  isDone: defaultIsDone, // (payload) => true for the frame that ends a stream
  onGap: () => {}, // (streamId, answer): frames are gone for good (gap, not_found): reload from the app
  onResume: () => {}, // (streamId, answer): every resume answer, e.g. for a status line
};

const MAX_HOLE_RETRIES = 2; // a hole that two resumes could not fill is accepted (and reported)
const VIEW = "\u0000"; // joins a stream id and a view's name in the helper's own keys

/** A view's name as the server writes it: "" for none (absent, null, false), "true", or the value. */
export function variantOf(value) {
  if (value === undefined || value === null || value === false) return "";
  return value === true ? "true" : String(value);
}

function keyOf(id, variant) {
  return variant ? `${id}${VIEW}${variant}` : id;
}

function idOf(key) {
  const [id, variant = ""] = key.split(VIEW);
  return { id, variant };
}

/** The server's default done rules (ASGI_RESUME_DONE): open-webui's shapes and a plain `done`. */
export function defaultIsDone(payload) {
  const type = payload?.data?.type;
  const data = payload?.data?.data;
  if (type === "chat:completion" && (data?.done || data?.error)) return true;
  if (type === "chat:tasks:cancel" || type === "chat:message:error") return true;
  if (type === "chat:active" && data?.active === false) return true;
  return Boolean(payload?.done);
}

export function resumable(socket, options = {}) {
  return new Resumer(socket, options);
}

export class Resumer {
  constructor(socket, options = {}) {
    this.socket = socket;
    this.options = { ...DEFAULTS, ...options };
    this.handlers = new Map(); // event -> Set of handlers
    this.fences = new Map(); // stream id -> { frames: [[event, args]], pending, timer }
    this.streams = this._load(); // stream id -> { seq, epoch, done, at, holes }
    this._onConnect = () => this._resumeAll();
    socket.on("connect", this._onConnect);
    if (socket.connected) this._resumeAll();
  }

  /** Deliver `event` to `handler`: stream frames once each and in order, other frames as they come. */
  on(event, handler) {
    if (!this.handlers.has(event)) {
      this.handlers.set(event, new Set());
      this.socket.on(event, (...args) => this._receive(event, args));
    }
    this.handlers.get(event).add(handler);
    return this;
  }

  off(event, handler) {
    this.handlers.get(event)?.delete(handler);
    return this;
  }

  /** What the helper knows of a stream (or of one view of it): { seq, epoch, done }, or undefined. */
  state(streamId, { variant = "" } = {}) {
    const s = this.streams.get(keyOf(String(streamId), variantOf(variant)));
    return s && { seq: s.seq, epoch: s.epoch, done: s.done };
  }

  /**
   * Ask for a stream's frames after the last one delivered, or from its start (`fromStart`: the page
   * has nothing of it, e.g. a message its API listed as still streaming). Resolves with the server's
   * answer: { ok, replayed, last_seq, oldest_seq, epoch, done, gap } or { ok: false, error }.
   */
  resume(streamId, { fromStart = false, variant = "" } = {}) {
    const id = keyOf(String(streamId), variantOf(variant));
    let state = this.streams.get(id);
    if (!state) {
      state = this._track(id, 0, undefined);
    } else if (fromStart) {
      state.seq = 0;
      state.done = false;
    }
    return this._resume(id, state);
  }

  /** Stop tracking a stream (every view of it). */
  forget(streamId) {
    for (const key of [...this.streams.keys()]) if (idOf(key).id === String(streamId)) this.streams.delete(key);
    this._save();
  }

  /** Detach from the socket. */
  close() {
    this.socket.off?.("connect", this._onConnect);
    for (const fence of this.fences.values()) clearTimeout(fence.timer);
    this.fences.clear();
  }

  // -- inside ----------------------------------------------------------------------------------

  _track(id, seq, epoch) {
    const state = { seq, epoch, done: false, at: Date.now(), holes: 0 };
    this.streams.set(id, state);
    this._save();
    return state;
  }

  _receive(event, args) {
    const payload = args[0];
    const raw = payload?.[this.options.streamField];
    if (raw === undefined || raw === null || typeof payload.seq !== "number") return this._deliver(event, args);
    const field = this.options.variantField;
    const id = keyOf(String(raw), field ? variantOf(payload[field]) : "");
    const fence = this.fences.get(id);
    if (fence) return void fence.frames.push([event, args]);
    const state = this.streams.get(id) ?? this._track(id, payload.seq - 1, payload.epoch);
    if (state.epoch !== undefined && payload.epoch !== state.epoch) {
      // the server lost this stream's log and started it again: what came in between is unknown
      this.options.onGap(idOf(id).id, { ok: true, gap: true, epoch: payload.epoch, reason: "epoch" });
      state.seq = payload.seq - 1;
    }
    state.epoch = payload.epoch;
    if (payload.seq <= state.seq) return; // delivered already
    if (payload.seq > state.seq + 1 && state.holes < MAX_HOLE_RETRIES) {
      // seq skipped a number: hold this frame and ask for what is missing
      state.holes += 1;
      this._resume(id, state); // opens the fence before its first await
      this.fences.get(id).frames.push([event, args]);
      return;
    }
    if (payload.seq > state.seq + 1) this.options.onGap(idOf(id).id, { ok: true, gap: true, reason: "hole" });
    state.holes = 0;
    state.seq = payload.seq;
    state.at = Date.now();
    if (this.options.isDone(payload)) state.done = true;
    this._save();
    this._deliver(event, args);
  }

  _deliver(event, args) {
    for (const handler of this.handlers.get(event) ?? []) handler(...args);
  }

  _resumeAll() {
    for (const [id, state] of this.streams) {
      // a resume asked while disconnected is sent now by socket.io itself: no need for another
      if (!state.done && !this.fences.get(id)?.queued) this._resume(id, state);
    }
  }

  async _resume(id, state) {
    let fence = this.fences.get(id);
    if (!fence) {
      fence = { frames: [], pending: 0, queued: false, timer: null };
      // a server that never answers (no middleware, a lost ack) must not stall the stream
      fence.timer = setTimeout(() => this._release(id), this.options.fenceTimeout);
      this.fences.set(id, fence);
    }
    fence.pending += 1;
    fence.queued = fence.queued || !this.socket.connected; // socket.io sends it once connected
    const { id: streamId, variant } = idOf(id);
    const request = { [this.options.streamField]: streamId, last_seq: state.seq };
    if (state.epoch !== undefined) request.epoch = state.epoch;
    if (variant) request.variant = variant;
    let answer;
    try {
      answer = await this.socket.timeout(this.options.fenceTimeout).emitWithAck(this.options.resumeEvent, request);
    } catch {
      answer = { ok: false, error: "timeout" };
    }
    if (answer?.ok && answer.gap) {
      if (answer.epoch !== state.epoch) state.seq = 0; // another history: its seq starts again at 1
      if (answer.oldest_seq > state.seq + 1) state.seq = answer.oldest_seq - 1; // older frames are gone
      state.epoch = answer.epoch;
    }
    if (answer?.ok && answer.done) state.done = true;
    this.options.onResume(streamId, answer);
    if (answer?.gap || answer?.error === "not_found") this.options.onGap(streamId, answer);
    if (this.fences.get(id) === fence && --fence.pending === 0) this._release(id);
    return answer;
  }

  _release(id) {
    const fence = this.fences.get(id);
    if (!fence) return;
    clearTimeout(fence.timer);
    this.fences.delete(id);
    fence.frames.sort((a, b) => a[1][0].seq - b[1][0].seq);
    for (const [event, args] of fence.frames) this._receive(event, args);
    this._save();
  }

  _load() {
    const streams = new Map();
    try {
      const saved = JSON.parse(this.options.storage?.getItem(this.options.storageKey) ?? "{}");
      for (const [id, s] of Object.entries(saved)) {
        if (typeof s?.seq === "number") streams.set(id, { seq: s.seq, epoch: s.epoch, done: false, at: s.at ?? 0, holes: 0 });
      }
    } catch {
      // unreadable or absent storage: start empty
    }
    return streams;
  }

  _save() {
    // streams in flight are kept (the most recently active first); finished ones need no resume
    const live = [...this.streams].filter(([, s]) => !s.done).sort((a, b) => b[1].at - a[1].at);
    const kept = live.slice(0, this.options.maxStreams);
    for (const [id] of live.slice(this.options.maxStreams)) this.streams.delete(id);
    if (this.streams.size > 2 * this.options.maxStreams) {
      for (const [id, s] of this.streams) if (s.done) this.streams.delete(id);
    }
    const saved = Object.fromEntries(kept.map(([id, s]) => [id, { seq: s.seq, epoch: s.epoch, at: s.at }]));
    try {
      this.options.storage?.setItem(this.options.storageKey, JSON.stringify(saved));
    } catch {
      // storage full or disabled: the helper still works for this page
    }
  }
}

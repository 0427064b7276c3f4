// The demo page: an ordinary socket.io app plus the asgi_resume helper (four lines, marked below).
import { io } from "/static/socket.io.esm.min.js";
import { resumable } from "/socket.io/asgi-resume.js"; // (1) served by the middleware

const user = localStorage.getItem("demo-user") ?? crypto.randomUUID();
localStorage.setItem("demo-user", user);

const socket = io({ auth: { token: user } });
const causes = watchResumes(socket); // only for the log below: why each resume was asked
const streams = resumable(socket, { onResume: logResume, onGap: (id) => log(`gap in ${short(id)}: reloading it`) }); // (2)
socket.on("connect", () => { causes.connecting = false; });
const views = new Map(); // message id -> { text, seq, status, element }

streams.on("events", (event) => { // (3) instead of socket.on("events", ...)
  const view = views.get(event.message_id);
  if (!view) return;
  const data = event.data?.data ?? {};
  if (typeof data.content === "string") view.text += data.content;
  if (data.done) view.status = "done";
  view.seq = event.seq ?? view.seq;
  render(view);
});

socket.on("connect", () => setStatus(`connected (${socket.io.engine.transport.name})`));
socket.io.engine?.on?.("upgrade", () => setStatus("connected (websocket)"));
socket.on("disconnect", (reason) => setStatus(`disconnected: ${reason}`));

document.querySelector("#ask").addEventListener("submit", async (e) => {
  e.preventDefault();
  const prompt = document.querySelector("#prompt").value;
  const { message_id } = await socket.emitWithAck("chat", { prompt });
  if (!views.has(message_id)) add({ id: message_id, prompt, status: "streaming", text: "" });
});

// After a reload the page knows its messages from the app's own API; an answer still streaming
// has no text there yet, so it is asked for again from its start.
const messages = await (await fetch(`/api/messages?user=${encodeURIComponent(user)}`)).json();
for (const message of messages) {
  add(message);
  if (message.status === "streaming") {
    causes.fromStart.add(message.id);
    streams.resume(message.id, { fromStart: true }); // (4)
  }
}

function add(message) {
  const element = document.createElement("div");
  element.className = "message";
  element.dataset.id = message.id;
  element.innerHTML = '<div class="prompt"></div><div class="meta"></div><div class="text"></div>';
  element.querySelector(".prompt").textContent = message.prompt;
  document.querySelector("#messages").append(element);
  const view = { id: message.id, text: message.text ?? "", seq: 0, status: message.status, element };
  views.set(message.id, view);
  render(view);
}

function render(view) {
  view.element.dataset.status = view.status;
  // a message loaded finished from the API has no seq on this page: none is shown rather than 0
  view.element.querySelector(".meta").textContent = view.seq ? `${view.status} · seq ${view.seq}` : view.status;
  view.element.querySelector(".text").textContent = view.text;
}

function logResume(id, answer) {
  const why = causes.of(id);
  if (answer?.ok) log(`resumed ${short(id)}: replayed ${answer.replayed}, up to seq ${answer.last_seq}${answer.gap ? " (gap)" : ""} (${why})`);
  else log(`resume ${short(id)}: ${answer?.error} (${why})`);
}

// The helper asks to resume in three cases: the page asks for a stream from its start (after a
// reload), the helper resumes its streams on every (re)connect, and it asks again when seq skips a
// number (a frame overtook the replay or another frame: the second resume fills that hole). Its
// requests are watched on their way out to tell the log which one an answer belongs to.
function watchResumes(socket) {
  const causes = { connecting: false, fromStart: new Set(), pending: new Map() };
  socket.on("connect", () => { causes.connecting = true; }); // before the helper's own "connect" handler
  socket.onAnyOutgoing((event, request) => {
    if (event !== "resume-stream") return;
    const id = request.message_id;
    let why = "seq skipped a number: filled the hole";
    if (request.last_seq === 0 && causes.fromStart.delete(id)) why = "page loaded: from its start";
    else if (causes.connecting) why = "after connecting";
    if (!causes.pending.has(id)) causes.pending.set(id, []);
    causes.pending.get(id).push(why);
  });
  causes.of = (id) => causes.pending.get(id)?.shift() ?? "asked";
  return causes;
}

function log(line) {
  const entry = document.createElement("div");
  entry.className = "entry";
  entry.textContent = `${new Date().toLocaleTimeString()} ${line}`;
  document.querySelector("#log").prepend(entry);
}

function setStatus(text) { document.querySelector("#status").textContent = text; }
function short(id) { return id.slice(0, 8); }

// The demo page: an ordinary socket.io app plus the asgi_resume helper (four lines, marked below).
import { io } from "/static/socket.io.esm.min.js";
import { resumable } from "/socket.io/asgi-resume.js"; // (1) served by the middleware

const user = localStorage.getItem("demo-user") ?? crypto.randomUUID();
localStorage.setItem("demo-user", user);

const socket = io({ auth: { token: user } });
const streams = resumable(socket, { onResume: logResume, onGap: (id) => log(`gap in ${short(id)}: reloading it`) }); // (2)
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
  if (message.status === "streaming") streams.resume(message.id, { fromStart: true }); // (4)
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
  view.element.querySelector(".meta").textContent = `${view.status} · seq ${view.seq}`;
  view.element.querySelector(".text").textContent = view.text;
}

function logResume(id, answer) {
  if (answer?.ok) log(`resumed ${short(id)}: replayed ${answer.replayed}, up to seq ${answer.last_seq}${answer.gap ? " (gap)" : ""}`);
  else log(`resume ${short(id)}: ${answer?.error}`);
}

function log(line) {
  const entry = document.createElement("div");
  entry.className = "entry";
  entry.textContent = `${new Date().toLocaleTimeString()} ${line}`;
  document.querySelector("#log").prepend(entry);
}

function setStatus(text) { document.querySelector("#status").textContent = text; }
function short(id) { return id.slice(0, 8); }

// The official socket.io-client, as an app would use it with asgi_resume's resume-stream:
// it drops its transport mid-stream, reconnects, asks for what it missed and prints its view.
// Usage: node drop_and_resume.mjs URL TOKEN MESSAGE_ID DROP_AFTER TRANSPORTS [close|kill]
//   close: socket.io.engine.close(); kill: destroy the TCP socket under the websocket (no close frame)
// Prints one JSON object per line: {"type": "connected"|"dropped"|"resumed"|"finished", ...}
import { io } from "socket.io-client";

const [url, token, messageId, dropAfter, transports, how = "close"] = process.argv.slice(2);
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const socket = io(url, { auth: { token }, transports: transports.split(","), reconnectionDelay: 50 });
const bySeq = new Map(); // seq -> content: the client's view, one entry per seq
let lastSeq = 0;
let fence = null; // frames held while a resume is in flight
let connects = 0;
let dropped = false;

function apply(event) {
  if (typeof event.seq !== "number" || event.seq <= lastSeq) return;
  lastSeq = event.seq;
  bySeq.set(event.seq, event);
  if (event.data?.data?.done) {
    const seqs = [...bySeq.keys()];
    say({ type: "finished", seqs, contents: seqs.map((s) => bySeq.get(s).data.data.content ?? "") });
    socket.close();
  }
}

socket.on("events", (event) => {
  if (event.message_id !== messageId) return;
  if (fence) return fence.push(event);
  apply(event);
  if (!dropped && bySeq.size >= Number(dropAfter)) {
    dropped = true;
    say({ type: "dropped", lastSeq, transport: socket.io.engine.transport.name });
    const ws = socket.io.engine.transport.ws;
    if (how === "kill" && ws?._socket) ws._socket.destroy();
    else socket.io.engine.close(); // the transport dies; the manager reconnects by itself
  }
});

socket.on("connect", async () => {
  connects += 1;
  say({ type: "connected", connects, transport: socket.io.engine.transport.name });
  if (connects === 1) return;
  fence = [];
  const answer = await socket.timeout(10000).emitWithAck("resume-stream", { message_id: messageId, last_seq: lastSeq });
  const held = fence.sort((a, b) => a.seq - b.seq);
  fence = null;
  say({ type: "resumed", answer });
  held.forEach(apply);
});

socket.on("connect_error", (err) => say({ type: "connect_error", message: err.message }));

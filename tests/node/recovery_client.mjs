// The stock socket.io-client with no resume code at all: it relies on connection state recovery.
// It drops its transport mid-stream, lets the manager reconnect, and prints what it got.
// Usage: node recovery_client.mjs URL TOKEN DROP_AFTER HOW [RECONNECT_URL] [RECONNECT_DELAY_MS]
//   HOW: close (socket.io.engine.close()) | kill (destroy the TCP socket: no close frame)
// Prints JSON lines: connected {recovered, pid}, dropped, finished {contents, offsets}.
import { io } from "socket.io-client";

const [url, token, dropAfter, how, reconnectUrl, delay = "50"] = process.argv.slice(2);
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

const socket = io(url, { auth: { token }, transports: ["websocket"], reconnectionDelay: Number(delay),
  reconnectionDelayMax: Number(delay) });
const contents = [];
const offsets = [];
let dropped = false;

socket.on("connect", () => say({ type: "connected", recovered: socket.recovered, pid: socket._pid }));
socket.on("events", (event, offset) => {
  contents.push(event.data.data.content ?? "");
  offsets.push(offset);
  if (!dropped && contents.length >= Number(dropAfter)) {
    dropped = true;
    say({ type: "dropped", lastOffset: socket._lastOffset });
    if (reconnectUrl) socket.io.uri = reconnectUrl; // the next connection lands on another worker
    const ws = socket.io.engine.transport.ws;
    if (how === "kill" && ws?._socket) ws._socket.destroy();
    else socket.io.engine.close();
  }
  if (event.data.data.done) {
    say({ type: "finished", contents, offsets });
    socket.close();
  }
});

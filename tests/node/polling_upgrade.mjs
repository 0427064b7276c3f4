// The official socket.io-client on long-polling: it asks for a replay over polling (a POST), then
// upgrades to websocket in the middle of a stream, and prints what it received and on which transport.
// Usage: node polling_upgrade.mjs URL TOKEN MESSAGE_ID UPGRADE_AFTER
import { io } from "socket.io-client";

const [url, token, messageId, upgradeAfter] = process.argv.slice(2);
const say = (obj) => process.stdout.write(JSON.stringify(obj) + "\n");

// upgrade: false, so that the test decides when the upgrade happens
const socket = io(url, { auth: { token }, transports: ["polling", "websocket"], upgrade: false });
const seqs = [];
const transports = [];
const contents = [];
let asked = false;

socket.on("connect", () => say({ type: "connected", transport: socket.io.engine.transport.name }));
socket.io.engine.on("upgrade", (transport) => say({ type: "upgraded", transport: transport.name }));

socket.on("events", async (event) => {
  if (event.message_id !== messageId || (seqs.length && event.seq <= seqs[seqs.length - 1])) return;
  seqs.push(event.seq);
  contents.push(event.data.data.content ?? "");
  transports.push(socket.io.engine.transport.name);
  if (seqs.length === 10 && !asked) {
    asked = true;
    const answer = await socket.timeout(10000).emitWithAck("resume-stream", { message_id: messageId, last_seq: 5 });
    say({ type: "resumed", answer, transport: socket.io.engine.transport.name });
  }
  if (seqs.length === Number(upgradeAfter)) socket.io.engine._probe("websocket");
  if (event.data.data.done) {
    say({ type: "finished", seqs, transports, contents });
    socket.close();
  }
});

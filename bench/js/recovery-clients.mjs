// Clients that move, measured with the official socket.io-client and its own reconnection.
//
// Usage: node recovery-clients.mjs LB_URL SENDER_URL TRANSPORT CLIENTS RATE COUNT SIGNAL_AFTER
//
// CLIENTS sockets connect through LB_URL (only TRANSPORT: websocket or polling; reconnection
// delay 100–500 ms). A sender connected straight to SENDER_URL (a node that stays up) emits
// `chat:message` {s: 0..COUNT-1} at RATE per second; every client should get each one once, in
// order (the chat contract broadcasts it to everyone). After SIGNAL_AFTER messages the script
// prints the line "SIGNAL" — the caller then kills or drains a node. When every message is sent
// it waits (at most 15 s) until every client is connected and has the last one, then prints one
// JSON line: clients, moved (clients that reconnected), reconnects, recovered (reconnects with
// socket.recovered true), expected, lost, duplicated, out_of_order, disconnects by reason.
import { io } from "socket.io-client";

const [lb, senderUrl, transport = "websocket", n = "100", rate = "10", count = "200", signalAfter = "50"] =
  process.argv.slice(2);
const CLIENTS = Number(n), RATE = Number(rate), COUNT = Number(count), SIGNAL_AT = Number(signalAfter);

const clients = [];
for (let i = 0; i < CLIENTS; i++) {
  const socket = io(lb, {
    transports: [transport],
    reconnection: true,
    reconnectionDelay: 100,
    reconnectionDelayMax: 500,
    forceNew: true,
  });
  const c = { socket, seqs: [], connects: 0, recovered: 0, disconnects: {} };
  socket.on("connect", () => {
    c.connects += 1;
    if (c.connects > 1 && socket.recovered) c.recovered += 1;
  });
  socket.on("disconnect", (reason) => { c.disconnects[reason] = (c.disconnects[reason] ?? 0) + 1; });
  socket.on("chat:message", (m) => { if (m && typeof m.s === "number") c.seqs.push(m.s); });
  clients.push(c);
}

const until = async (what, ms, ok) => {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
  return true;
};
if (!(await until("connected", 30000, () => clients.every((c) => c.socket.connected)))) {
  console.error(`only ${clients.filter((c) => c.socket.connected).length} of ${CLIENTS} connected`);
  process.exit(1);
}
const placement = {};
await Promise.all(clients.map(async (c) => {
  const who = await c.socket.timeout(5000).emitWithAck("whoami").catch(() => ({ node: "?" }));
  placement[who.node] = (placement[who.node] ?? 0) + 1;
}));

const sender = io(senderUrl, { transports: ["websocket"], forceNew: true });
await new Promise((r) => sender.on("connect", r));
for (let s = 0; s < COUNT; s++) {
  sender.emit("chat:message", { s });
  if (s + 1 === SIGNAL_AT) console.log("SIGNAL");
  await new Promise((r) => setTimeout(r, 1000 / RATE));
}
await until("settled", 15000, () =>
  clients.every((c) => c.socket.connected && c.seqs.includes(COUNT - 1)));

let lost = 0, dup = 0, ooo = 0, moved = 0, reconnects = 0, recovered = 0;
const disconnects = {};
for (const c of clients) {
  const seen = new Set();
  let last = -1;
  for (const s of c.seqs) {
    if (seen.has(s)) dup += 1;
    if (s < last) ooo += 1;
    seen.add(s);
    last = Math.max(last, s);
  }
  for (let s = 0; s < COUNT; s++) if (!seen.has(s)) lost += 1;
  if (c.connects > 1) moved += 1;
  reconnects += Math.max(0, c.connects - 1);
  recovered += c.recovered;
  for (const [k, v] of Object.entries(c.disconnects)) disconnects[k] = (disconnects[k] ?? 0) + v;
}
console.log(JSON.stringify({
  clients: CLIENTS, placement, moved, reconnects, recovered,
  expected: COUNT * CLIENTS, lost, duplicated: dup, out_of_order: ooo, disconnects,
  connected: clients.filter((c) => c.socket.connected).length,
}));
for (const c of clients) c.socket.close();
sender.close();
process.exit(0);

// A plain Node.js socket.io server, used as a backend the LB knows nothing special about.
// Usage: node server.mjs <node-id> [port]   (port 0 = any free port)
// Prints "socketio-node <id> listening on 127.0.0.1:<port>" once listening.
// Serves GET /readyz (200) for health checks, the chat contract (chat:message, room:message,
// join, `whoami`, `echo`), and
// `headers` (ack with the handshake's HTTP headers, to check what a proxy forwarded).
import { createServer } from "node:http";
import { Server } from "socket.io";

const id = process.argv[2] ?? "node";
const port = Number(process.argv[3] ?? 0);

const http = createServer((req, res) => {
  if (req.url === "/readyz" || req.url === "/healthz") {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ ready: true, node: id }));
    return;
  }
  res.writeHead(404);
  res.end();
});
const io = new Server(http, { pingInterval: 25000, pingTimeout: 20000 });
io.on("connection", (socket) => {
  // The chat contract of docs/protocol.md, so iogate-loadtest can drive this server too.
  const room = socket.handshake.auth?.room ?? socket.handshake.query?.room;
  if (typeof room === "string" && room) socket.join(room);
  socket.on("chat:message", (data) => io.emit("chat:message", data));
  socket.on("room:message", (msg) => {
    if (msg && typeof msg.room === "string") io.to(msg.room).emit("room:message", { room: msg.room, data: msg.data });
  });
  socket.on("join", (r, ack) => { socket.join(String(r)); ack?.(true); });
  socket.on("whoami", (ack) => ack?.({ node: id, sid: socket.id, rooms: [...socket.rooms] }));
  socket.on("echo", (data, ack) => (typeof ack === "function" ? ack(data) : socket.emit("echo", data)));
  socket.on("headers", (ack) => ack?.(socket.handshake.headers));
});
http.listen(port, "127.0.0.1", () => {
  console.log(`socketio-node ${id} listening on 127.0.0.1:${http.address().port}`);
});
process.on("SIGTERM", () => process.exit(0));

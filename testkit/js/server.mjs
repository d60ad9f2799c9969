// A plain Node.js socket.io server, used as a backend the LB knows nothing special about.
// Usage: node server.mjs <node-id> [port]   (port 0 = any free port)
// Prints "socketio-node <id> listening on 127.0.0.1:<port>" once listening.
// Serves GET /readyz (200) for health checks, the chat contract (chat:message, room:message,
// join, `whoami`, `echo`), and
// `headers` (ack with the handshake's HTTP headers, to check what a proxy forwarded).
import { createServer } from "node:http";
import { Server } from "socket.io";
import { chatContract } from "./chat-contract.mjs";

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
chatContract(io, id);
http.listen(port, "127.0.0.1", () => {
  console.log(`socketio-node ${id} listening on 127.0.0.1:${http.address().port}`);
});
process.on("SIGTERM", () => process.exit(0));

// A plain Node.js socket.io server, used as a backend the LB knows nothing special about.
// Usage: node server.mjs <node-id> [port] [--plain] [--sid-tag TAG]   (port 0 = any free port)
// Prints "socketio-node <id> listening on 127.0.0.1:<port>" once listening.
// Serves the chat contract (chat:message, room:message, join, `whoami`, `echo`) and `headers`
// (ack with the handshake's HTTP headers, to check what a proxy forwarded).
//   default       also GET /readyz and /healthz (200), for tests that check an http health path
//   --plain       nothing but socket.io: what a user's server looks like behind the quick form
//   --sid-tag T   session ids `T.<random>` through engine.io's generateId, as docs/operations.md
//                 tells Node.js users to do, so any iogate-lb replica routes them
//   --stream P    GET P... answers "a", "b", "c" in three writes without a length (HTTP/1.1
//                 chunked, as any Node.js handler that streams), for a proxy's chunked relay
import { createServer } from "node:http";
import { randomBytes } from "node:crypto";
import { Server } from "socket.io";
import { chatContract } from "./chat-contract.mjs";

const args = process.argv.slice(2);
const flag = (name) => args.includes(name);
const option = (name) => {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
};
const positional = args.filter(
  (a, i) => !a.startsWith("--") && !(i > 0 && ["--sid-tag", "--stream"].includes(args[i - 1])),
);
const id = positional[0] ?? "node";
const port = Number(positional[1] ?? 0);
const plain = flag("--plain");
const sidTag = option("--sid-tag");
const stream = option("--stream");

const http = createServer((req, res) => {
  if (!plain && (req.url === "/readyz" || req.url === "/healthz")) {
    res.writeHead(200, { "content-type": "application/json" });
    res.end(JSON.stringify({ ready: true, node: id }));
    return;
  }
  if (stream && req.url.startsWith(stream)) {
    res.writeHead(200, { "content-type": "text/plain" });
    res.write("a");
    setTimeout(() => {
      res.write("b");
      setTimeout(() => res.end("c"), 20);
    }, 20);
    return;
  }
  // socket.io answers its own path before this handler runs; anything else is not found.
  res.writeHead(404);
  res.end();
});
const io = new Server(http, { pingInterval: 25000, pingTimeout: 20000 });
if (sidTag) {
  // 15 random bytes = 20 URL-safe characters, as engine.io's own ids.
  io.engine.generateId = () => `${sidTag}.${randomBytes(15).toString("base64url")}`;
}
chatContract(io, id);
// How many Engine.IO sessions the server holds (health probes must leave none behind).
io.on("connection", (socket) => socket.on("engine:clients", (ack) => ack?.(io.engine.clientsCount)));
http.listen(port, "127.0.0.1", () => {
  console.log(`socketio-node ${id} listening on 127.0.0.1:${http.address().port}`);
});
process.on("SIGTERM", () => process.exit(0));

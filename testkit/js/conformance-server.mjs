// The reference server of the differential conformance test (lb/tests/differential.rs): socket.io
// from npm with the settings of socketio/socket.io-protocol's test-suite server and the same
// application as iogate-node's `conformance` profile, on "/" and "/custom".
// Usage: node conformance-server.mjs <id> [port]   (port 0 = any free port)
import { createServer } from "node:http";
import { Server } from "socket.io";

const id = process.argv[2] ?? "reference";
const port = Number(process.argv[3] ?? 0);
const http = createServer((req, res) => {
  res.writeHead(404);
  res.end();
});
const io = new Server(http, {
  pingInterval: 300,
  pingTimeout: 200,
  maxHttpBufferSize: 1e6,
  connectTimeout: 1000,
});

function application(socket) {
  socket.emit("auth", socket.handshake.auth);
  socket.on("message", (...args) => socket.emit("message-back", ...args));
  socket.on("message-with-ack", (...args) => {
    const ack = args.pop();
    ack(...args);
  });
  socket.on("emit-with-ack", (...args) => {
    socket.emit("emit-with-ack", ...args, (...reply) => socket.emit("emit-with-ack", ...reply));
  });
  // Not in the socket.io-protocol test suite: the differential test's server-side disconnect.
  socket.on("disconnect-me", () => socket.disconnect());
}
io.of("/").on("connection", application);
io.of("/custom").on("connection", application);

http.listen(port, "127.0.0.1", () => {
  console.log(`socketio-reference ${id} listening on 127.0.0.1:${http.address().port}`);
});
process.on("SIGTERM", () => process.exit(0));

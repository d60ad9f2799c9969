// One Node.js socket.io node with connection state recovery across nodes, as socket.io documents
// it: socket.io 4 + @socket.io/redis-streams-adapter (the adapter that supports recovery; the
// classic redis-adapter does not) + `connectionStateRecovery` with its defaults (sessions kept
// 2 min, middlewares skipped on recovery). It speaks the chat contract of docs/protocol.md, like
// iogate-node, so the same clients drive both.
//
// Usage: node socketio-recovery-node.mjs <node-id> <port> <redis-url>
// GET /readyz answers 200 once the Redis client is connected. SIGTERM: io.close() — every
// client sees "transport close" (socket.io keeps the sessions, "server shutting down" is a
// recoverable reason) — then the Redis client quits, which waits for the pending session
// writes, then the process exits.
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-streams-adapter";
import { createClient } from "redis";
import { chatContract } from "../../testkit/js/chat-contract.mjs";
import { probeServer } from "./probe-server.mjs";

const [id = "node", portArg = "0", redisUrl = "redis://127.0.0.1:6379"] = process.argv.slice(2);
const probe = probeServer(id);
const http = probe.http;

const redis = createClient({ url: redisUrl });
redis.on("error", (e) => console.error(`redis: ${e.message}`));
await redis.connect();

const io = new Server(http, {
  adapter: createAdapter(redis),
  connectionStateRecovery: {},
});
chatContract(io, id);
http.listen(Number(portArg), "127.0.0.1", () => {
  probe.ready = true;
  console.log(`socketio-recovery-node ${id} listening on 127.0.0.1:${http.address().port}`);
});
const stop = () => {
  probe.ready = false;
  io.close();
  redis.quit().catch(() => {}).finally(() => process.exit(0));
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

// One Node.js socket.io node of the baseline cluster: socket.io 4 + @socket.io/redis-adapter
// (classic PUBLISH/SUBSCRIBE adapter, node-redis client), as its README sets it up. It speaks
// the chat contract of docs/protocol.md that iogate-loadtest drives, so both clusters run the
// same scenarios.
//
// Usage: node socketio-cluster-node.mjs <node-id> <port> <redis-url>
// Prints "socketio-cluster-node <id> listening on 127.0.0.1:<port>"; GET /readyz answers 200
// once the adapter's Redis clients are connected.
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";
import { chatContract } from "../../testkit/js/chat-contract.mjs";
import { probeServer } from "./probe-server.mjs";

const [id = "node", portArg = "0", redisUrl = "redis://127.0.0.1:6379"] = process.argv.slice(2);
const probe = probeServer(id);
const http = probe.http;

const pub = createClient({ url: redisUrl });
const sub = pub.duplicate();
pub.on("error", (e) => console.error(`redis: ${e.message}`));
sub.on("error", (e) => console.error(`redis: ${e.message}`));
await Promise.all([pub.connect(), sub.connect()]);

const io = new Server(http, { adapter: createAdapter(pub, sub) });
chatContract(io, id);
http.listen(Number(portArg), "127.0.0.1", () => {
  probe.ready = true;
  console.log(`socketio-cluster-node ${id} listening on 127.0.0.1:${http.address().port}`);
});
const stop = () => { io.close(); Promise.allSettled([pub.quit(), sub.quit()]).finally(() => process.exit(0)); };
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

// One Node.js socket.io node of the baseline cluster: socket.io 4 + @socket.io/redis-adapter
// (classic PUBLISH/SUBSCRIBE adapter, node-redis client), as its README sets it up. It speaks
// the chat contract of docs/protocol.md that iogate-loadtest drives, so both clusters run the
// same scenarios.
//
// Usage: node socketio-cluster-node.mjs <node-id> <port> <redis-url>
// Prints "socketio-cluster-node <id> listening on 127.0.0.1:<port>"; GET /readyz answers 200
// once the adapter's Redis clients are connected.
import { createServer } from "node:http";
import { Server } from "socket.io";
import { createAdapter } from "@socket.io/redis-adapter";
import { createClient } from "redis";
import { chatContract } from "../../testkit/js/chat-contract.mjs";

const [id = "node", portArg = "0", redisUrl = "redis://127.0.0.1:6379"] = process.argv.slice(2);
let ready = false;
const http = createServer((req, res) => {
  if (req.url === "/readyz" || req.url === "/healthz") {
    res.writeHead(ready ? 200 : 503, { "content-type": "application/json" });
    res.end(JSON.stringify({ ready, node: id }));
    return;
  }
  res.writeHead(404);
  res.end();
});

const pub = createClient({ url: redisUrl });
const sub = pub.duplicate();
pub.on("error", (e) => console.error(`redis: ${e.message}`));
sub.on("error", (e) => console.error(`redis: ${e.message}`));
await Promise.all([pub.connect(), sub.connect()]);

const io = new Server(http, { adapter: createAdapter(pub, sub) });
chatContract(io, id);
http.listen(Number(portArg), "127.0.0.1", () => {
  ready = true;
  console.log(`socketio-cluster-node ${id} listening on 127.0.0.1:${http.address().port}`);
});
const stop = () => { io.close(); Promise.allSettled([pub.quit(), sub.quit()]).finally(() => process.exit(0)); };
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

// The HTTP server both baseline nodes (socketio-cluster-node.mjs, socketio-recovery-node.mjs)
// attach socket.io to: GET /readyz and /healthz answer 200 once `ready` is set, 503 before.
import { createServer } from "node:http";

export function probeServer(id) {
  const probe = { ready: false };
  probe.http = createServer((req, res) => {
    if (req.url === "/readyz" || req.url === "/healthz") {
      res.writeHead(probe.ready ? 200 : 503, { "content-type": "application/json" });
      res.end(JSON.stringify({ ready: probe.ready, node: id }));
      return;
    }
    res.writeHead(404);
    res.end();
  });
  return probe;
}

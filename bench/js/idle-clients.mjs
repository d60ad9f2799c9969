// The baseline for the load generator's efficiency benchmark: N official socket.io-client
// sockets (WebSocket transport) held open in one Node.js process.
// Usage: node bench/js/idle-clients.mjs URL N [connectRatePerSec]
import { io } from "socket.io-client";

const url = process.argv[2];
const n = Number(process.argv[3] ?? 10000);
const rate = Number(process.argv[4] ?? 2000);
let connected = 0;
let failed = 0;
const sockets = [];
for (let i = 0; i < n; i++) {
  const s = io(url, { transports: ["websocket"], forceNew: true, reconnection: false, timeout: 20000 });
  s.on("connect", () => {
    connected++;
    if (connected + failed === n) console.log(`connected ${connected} failed ${failed}`);
  });
  s.on("connect_error", () => {
    failed++;
    if (connected + failed === n) console.log(`connected ${connected} failed ${failed}`);
  });
  sockets.push(s);
  if (rate > 0 && i % Math.max(1, Math.floor(rate / 100)) === 0) await new Promise((r) => setTimeout(r, 10));
}
process.on("SIGTERM", () => process.exit(0));
setInterval(() => {}, 1 << 30);

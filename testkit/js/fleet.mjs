// A fleet of official socket.io-client sockets driven over stdin/stdout (one JSON object per
// line), so the Rust integration tests can use the real client against real servers.
//
// Commands: {"id":N,"cmd":"connect","name":"a","url":"http://...","count":3,
//             "transports":["websocket"],"auth":{},"query":{},"reconnection":false}
//           {"id":N,"cmd":"emit","client":"a#0","event":"echo","args":[1],"ack":true,"timeoutMs":1000}
//           {"id":N,"cmd":"events","event":"chat:message"}   -> {client: [payload,...]}
//           {"id":N,"cmd":"clear"}
//           {"id":N,"cmd":"status"}                          -> connected/disconnect reasons
//           {"id":N,"cmd":"close","prefix":"a"}
//           {"id":N,"cmd":"drop","client":"a#0"}               -> the client's transport closes under
//                                                                it (a network drop); it reconnects
//           {"id":N,"cmd":"pump","client":"s#0","event":"e","rate":20,"count":300,
//             "room":"r"}  -> emits {"s": i} (or {"room","data":{"s": i}} with room) at rate/s,
//                             in the background; {"cmd":"pumped","client":"s#0"} -> {"sent": n}
// "connect" also takes "ca": PEM (trust it for https:// and wss:// URLs), "autoAck": true (answer server acks with the same arguments) and "path"
// (namespace appended to the url, e.g. "/custom").
// Replies: {"id":N,"ok":true,...} or {"id":N,"ok":false,"error":"..."}.
import { io } from "socket.io-client";
import readline from "node:readline";

const clients = new Map(); // name -> { socket, events: [{event,args,t}], disconnects: [], connects }
const pumps = new Map(); // "client/event/room" -> messages sent

function reply(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

function connectOne(name, c) {
  return new Promise((resolve, reject) => {
    const socket = io(c.url, {
      transports: c.transports ?? ["polling", "websocket"],
      upgrade: c.upgrade ?? true,
      auth: c.auth ?? {},
      query: c.query ?? {},
      reconnection: c.reconnection ?? false,
      reconnectionDelay: c.reconnectionDelay ?? 200,
      reconnectionDelayMax: c.reconnectionDelayMax ?? 1000,
      randomizationFactor: c.randomizationFactor ?? 0.5,
      timeout: c.timeoutMs ?? 5000,
      forceNew: true,
      // https/wss with a test CA (PEM); Node.js only, as a browser would use its trust store.
      ...(c.ca ? { ca: c.ca } : {}),
    });
    const rec = { socket, events: [], disconnects: [], connects: 0, recovered: [] };
    clients.set(name, rec);
    socket.onAny((event, ...args) => {
      // With autoAck, a server emit that expects an ack is answered with its own arguments.
      const cb = typeof args[args.length - 1] === "function" ? args.pop() : null;
      if (cb && c.autoAck) cb(...args);
      rec.events.push({ event, args, t: Date.now() });
    });
    socket.on("disconnect", (reason) => rec.disconnects.push({ reason, t: Date.now() }));
    let settled = false;
    socket.on("connect", () => {
      rec.connects += 1;
      rec.recovered.push(socket.recovered === true);
      if (!settled) {
        settled = true;
        resolve({ name, sid: socket.id });
      }
    });
    socket.on("connect_error", (err) => {
      if (!settled && !(c.reconnection ?? false)) {
        settled = true;
        reject(new Error(`${name}: ${err.message}`));
      }
    });
  });
}

async function handle(msg) {
  switch (msg.cmd) {
    case "connect": {
      const names = [];
      for (let i = 0; i < (msg.count ?? 1); i++) names.push(`${msg.name}#${i}`);
      const res = await Promise.all(names.map((n) => connectOne(n, msg)));
      return { clients: res };
    }
    case "emit": {
      const rec = clients.get(msg.client);
      if (!rec) throw new Error(`unknown client ${msg.client}`);
      const args = msg.args ?? [];
      if (msg.ack) {
        const t0 = Date.now();
        const ack = await rec.socket.timeout(msg.timeoutMs ?? 2000).emitWithAck(msg.event, ...args);
        return { ack, ms: Date.now() - t0 };
      }
      rec.socket.emit(msg.event, ...args);
      return {};
    }
    case "events": {
      const out = {};
      for (const [name, rec] of clients) {
        out[name] = rec.events.filter((e) => !msg.event || e.event === msg.event).map((e) => e.args);
      }
      return { events: out };
    }
    case "clear": {
      for (const rec of clients.values()) rec.events = [];
      return {};
    }
    case "status": {
      const out = {};
      for (const [name, rec] of clients) {
        out[name] = {
          connected: rec.socket.connected,
          transport: rec.socket.io.engine?.transport?.name ?? null,
          connects: rec.connects,
          recovered: rec.recovered,
          disconnects: rec.disconnects,
        };
      }
      return { clients: out };
    }
    case "drop": {
      const rec = clients.get(msg.client);
      if (!rec) throw new Error(`unknown client ${msg.client}`);
      rec.socket.io.engine.close();
      return {};
    }
    case "pump": {
      const rec = clients.get(msg.client);
      if (!rec) throw new Error(`unknown client ${msg.client}`);
      const key = `${msg.client}/${msg.event}/${msg.room ?? ""}`;
      pumps.set(key, 0);
      let i = 0;
      const timer = setInterval(() => {
        const body = msg.room ? { room: msg.room, data: { s: i } } : { s: i };
        rec.socket.emit(msg.event, body);
        i += 1;
        pumps.set(key, i);
        if (i >= msg.count) clearInterval(timer);
      }, 1000 / msg.rate);
      return {};
    }
    case "pumped": {
      const key = `${msg.client}/${msg.event}/${msg.room ?? ""}`;
      return { sent: pumps.get(key) ?? 0 };
    }
    case "close": {
      for (const [name, rec] of clients) {
        if (!msg.prefix || name.startsWith(msg.prefix + "#")) {
          rec.socket.close();
          clients.delete(name);
        }
      }
      return {};
    }
    default:
      throw new Error(`unknown command ${msg.cmd}`);
  }
}

const rl = readline.createInterface({ input: process.stdin });
rl.on("line", (line) => {
  let msg;
  try {
    msg = JSON.parse(line);
  } catch (e) {
    reply({ id: null, ok: false, error: `bad json: ${e.message}` });
    return;
  }
  handle(msg).then(
    (res) => reply({ id: msg.id, ok: true, ...res }),
    (err) => reply({ id: msg.id, ok: false, error: String(err?.message ?? err) }),
  );
});
rl.on("close", () => {
  for (const rec of clients.values()) rec.socket.close();
  process.exit(0);
});

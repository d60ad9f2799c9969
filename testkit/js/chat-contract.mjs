// The chat contract of docs/protocol.md for a Node.js socket.io server, shared by the test
// backend (testkit/js/server.mjs) and the benchmark's baseline cluster node
// (bench/js/socketio-cluster-node.mjs), so iogate-loadtest drives either exactly like iogate-node.
export function chatContract(io, id) {
  io.on("connection", (socket) => {
    const room = socket.handshake.auth?.room ?? socket.handshake.query?.room;
    if (typeof room === "string" && room) socket.join(room);
    socket.on("chat:message", (data) => io.emit("chat:message", data));
    socket.on("room:message", (msg) => {
      if (msg && typeof msg.room === "string") io.to(msg.room).emit("room:message", { room: msg.room, data: msg.data });
    });
    socket.on("join", (r, ack) => { socket.join(String(r)); ack?.(true); });
    socket.on("whoami", (ack) => ack?.({ node: id, sid: socket.id, rooms: [...socket.rooms] }));
    socket.on("echo", (data, ack) => (typeof ack === "function" ? ack(data) : socket.emit("echo", data)));
    // The HTTP headers of the handshake, to check what a proxy forwarded.
    socket.on("headers", (ack) => ack?.(socket.handshake.headers));
  });
}

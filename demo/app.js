// The iogate chat demo: joins a room through the load balancer, shows for every message the
// node that delivered it (this page's node) and the sender's node, and a live panel of sessions
// per node from the LB's admin API (proxied read-only by the nodes at /demo/backends).
(function () {
  "use strict";
  const $ = (id) => document.getElementById(id);
  let socket = null;
  let myNode = null;
  let room = null;
  let nick = null;

  function addLine(html, cls) {
    const li = document.createElement("li");
    if (cls) li.className = cls;
    li.innerHTML = html;
    $("messages").appendChild(li);
    li.scrollIntoView({ block: "nearest" });
    return li;
  }

  function esc(s) {
    return String(s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }

  function setStatus(text, online) {
    $("status").textContent = text;
    $("status").classList.toggle("online", online);
    $("text").disabled = !online;
    $("send-button").disabled = !online;
  }

  $("join").addEventListener("submit", (e) => {
    e.preventDefault();
    nick = $("nick").value.trim();
    room = $("room").value.trim();
    if (!nick || !room) return;
    if (socket) socket.disconnect();
    socket = io({ auth: { room } });
    socket.on("connect", async () => {
      const who = await socket.emitWithAck("whoami");
      myNode = who.node;
      setStatus(`${nick} in #${room} on node ${myNode}`, true);
      $("status").dataset.node = myNode;
      addLine(`connected to node <b class="node">${esc(myNode)}</b>`, "system");
    });
    socket.on("disconnect", (reason) => {
      setStatus(`disconnected (${reason})`, false);
      addLine(`disconnected: ${esc(reason)}`, "system");
      // A draining node ends sessions with "io server disconnect"; come back through the LB.
      if (reason === "io server disconnect") setTimeout(() => socket.connect(), 500);
    });
    socket.on("room:message", ({ data }) => {
      if (!data || typeof data !== "object") return;
      const li = addLine(
        `<b>${esc(data.nick)}</b>: <span class="text">${esc(data.text)}</span>` +
          `<span class="meta">sent via ${esc(data.from)} · delivered by ${esc(myNode)}</span>`,
        "message",
      );
      li.dataset.from = data.from;
      li.dataset.deliveredBy = myNode;
    });
  });

  $("send").addEventListener("submit", (e) => {
    e.preventDefault();
    const text = $("text").value.trim();
    if (!text || !socket || !socket.connected) return;
    socket.emit("room:message", { room, data: { nick, text, from: myNode } });
    $("text").value = "";
  });

  async function refreshNodes() {
    try {
      const r = await fetch("/demo/backends", { cache: "no-store" });
      if (!r.ok) throw new Error(r.status);
      const { backends } = await r.json();
      const rows = backends
        .map((b) => `<tr class="${b.id === myNode ? "mine" : ""}" data-node="${esc(b.id)}"><td>${esc(b.id)}</td><td>${esc(b.state)}</td><td class="sessions">${b.live_sessions}</td></tr>`)
        .join("");
      document.querySelector("#nodes tbody").innerHTML = rows;
    } catch (err) {
      document.querySelector("#nodes tbody").innerHTML = `<tr><td colspan="3">load balancer admin API unavailable</td></tr>`;
    }
  }
  setInterval(refreshNodes, 1000);
  refreshNodes();
})();

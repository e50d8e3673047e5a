/**
 * The page served at `GET /`: a small chat client with no outside assets.
 *
 * @module
 */

/** The HTML of the web client. */
export const WEB_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Chat</title>
<style>
  body { font: 15px/1.4 system-ui, sans-serif; margin: 0; display: flex; flex-direction: column; height: 100vh; }
  header, form { display: flex; gap: .5rem; padding: .5rem; background: #f3f4f6; }
  #log { flex: 1; overflow-y: auto; padding: .5rem; margin: 0; list-style: none; }
  #log li { padding: .15rem 0; white-space: pre-wrap; word-break: break-word; }
  .meta { color: #6b7280; font-size: .85em; }
  .error { color: #b91c1c; }
  input { flex: 1; min-width: 0; padding: .4rem; }
</style>
</head>
<body>
<header>
  <input id="name" placeholder="your name" aria-label="your name" autocomplete="username">
  <input id="room" placeholder="room" aria-label="room" value="general">
  <button id="enter">Enter</button>
  <span id="status" class="meta" role="status">connecting…</span>
</header>
<ul id="log" aria-live="polite"></ul>
<form id="send">
  <input id="text" placeholder="message" aria-label="message" autocomplete="off">
  <button>Send</button>
</form>
<script type="module">
const $ = (id) => document.getElementById(id);
const log = $("log");
let socket;
let me = "";
let room = "";
function line(text, cls = "") {
  const item = document.createElement("li");
  item.textContent = text; // content is text, never HTML
  item.className = cls;
  log.append(item);
  log.scrollTop = log.scrollHeight;
}
function time(ms) { return new Date(ms).toLocaleTimeString(); }
function connect() {
  const url = new URL("/ws", location.href);
  url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
  socket = new WebSocket(url);
  socket.onopen = () => { $("status").textContent = "connected"; };
  socket.onclose = () => { $("status").textContent = "disconnected, retrying…"; setTimeout(connect, 2000); };
  socket.onmessage = (event) => {
    const { message_type: type, message_body: body } = JSON.parse(event.data);
    if (type === "GroupChat") line("[" + time(body.timestamp) + "] #" + body.room + " " + body.sender_username + ": " + body.content);
    else if (type === "PrivateChat") line("[" + time(body.timestamp) + "] " + body.sender_username + " → " + body.target_username + ": " + body.content);
    else if (type === "Enter") line(body.sender_username + " entered #" + body.room, "meta");
    else if (type === "Leave") line(body.sender_username + " left #" + body.room, "meta");
    else if (type === "Presence") line("in #" + body.room + ": " + body.members.join(", "), "meta");
    else if (type === "History") for (const m of body.messages) line("[" + time(m.timestamp) + "] #" + m.room + " " + m.sender_username + ": " + m.content);
    else if (type === "Error") line(body.message, "error");
  };
}
$("enter").onclick = () => {
  me = $("name").value.trim();
  room = $("room").value.trim() || "general";
  socket.send(JSON.stringify({ message_type: "Enter", message_body: { sender_username: me, room, history: 20 } }));
};
$("send").onsubmit = (event) => {
  event.preventDefault();
  const content = $("text").value;
  if (!content) return;
  socket.send(JSON.stringify({ message_type: "GroupChat", message_body: { sender_username: me, content, room } }));
  $("text").value = "";
};
connect();
</script>
</body>
</html>
`;

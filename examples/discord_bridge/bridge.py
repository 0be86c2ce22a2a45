#!/usr/bin/env python3
"""A chat and event bridge between a clustorio cluster and a Discord-style webhook.

An external clustorio plugin (docs/plugins.md), in Python with only the standard library and
`websockets`. It connects to the controller's link socket with role "plugin" and:

* posts chat lines, player joins/leaves and instance crashes to WEBHOOK_URL in Discord's webhook
  JSON format ({"content": ..., "username": ..., "allowed_mentions": ...});
* posts what games send on its durable channel `discord_bridge:announce` (kept by the
  controller while this process is away, delivered when it is back);
* listens on LISTEN (host:port) for POST {"content": "...", "instance": "name" | null} and types
  the message into that game, or into every game where the plugin is enabled.

Settings (environment):
  CLUSTORIO_URL           controller, e.g. http://127.0.0.1:8081 (or ws://…/api/socket)
  CLUSTORIO_PLUGIN_TOKEN  from `clustorio ctl plugin token discord_bridge`
  WEBHOOK_URL             where to post (a Discord webhook URL, or any HTTP endpoint)
  LISTEN                  address of the incoming endpoint, default 127.0.0.1:8090
  BRIDGE_PLUGIN_API       plugin API version to declare (default 1; for testing refusals)
"""

import asyncio
import itertools
import json
import os
import sys
import threading
import urllib.error
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

try:
    from websockets.asyncio.client import connect
except ImportError:  # websockets < 13
    from websockets import connect  # type: ignore

NAME = "discord_bridge"
VERSION = "1.0.0"
PROTOCOL_VERSION = 1
PLUGIN_API = int(os.environ.get("BRIDGE_PLUGIN_API", "1"))
# Close codes the controller uses for a refusal that retrying cannot fix.
FATAL = {"unauthorized", "forbidden", "api_mismatch", "bad_declaration", "name_mismatch",
         "channel_taken", "too_large", "version_mismatch", "revoked"}

DECLARATION = {
    "api": PLUGIN_API,
    "name": NAME,
    "version": VERSION,
    "title": "Discord bridge",
    "description": "Chat, joins, leaves and crashes to a webhook; webhook messages into the games.",
    "permissions": [{"name": "discord_bridge.status", "title": "See the bridge's state"}],
    "requests": [{"name": "discord_bridge.status", "permission": "discord_bridge.status"}],
    "instance_config": [{"name": "discord_bridge.prefix", "type": "string", "default": "[Discord]",
                         "title": "Prefix of messages typed into the game"}],
    "ipc_channels": ["discord_bridge:"],
    "durable": ["discord_bridge:announce"],
    "events": ["chat", "player_join", "player_leave", "instance_status"],
}


def log(*args):
    print("bridge:", *args, file=sys.stderr, flush=True)


def lua_string(s):
    """A Lua string literal that reads back as exactly `s`."""
    out = ['"']
    for c in s:
        o = ord(c)
        if c == "\\":
            out.append("\\\\")
        elif c == '"':
            out.append('\\"')
        elif c == "\n":
            out.append("\\n")
        elif o < 0x20 or o == 0x7F:
            out.append("\\%03d" % o)
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def socket_url(url):
    if url.startswith("http://"):
        url = "ws://" + url[len("http://"):]
    elif url.startswith("https://"):
        url = "wss://" + url[len("https://"):]
    if not url.rstrip("/").endswith("/api/socket"):
        url = url.rstrip("/") + "/api/socket"
    return url


class Link:
    """The link protocol: hello/ready, seq/ack, resume, requests with ids."""

    def __init__(self, url, token):
        self.url, self.token = url, token
        self.ws = None
        self.session = None
        self.last_seen = 0          # highest seq received and handled
        self.received = 0           # highest seq received (maybe not handled yet)
        self.generation = 0         # bumped on every new session
        self.next_seq = 1
        self.unacked = {}           # seq -> frame text we sent
        self.ids = itertools.count(1)
        self.waiting = {}           # request id -> future
        self.connected = asyncio.Event()

    async def send_sequenced(self, frame):
        frame["seq"] = self.next_seq
        frame["ack"] = self.last_seen
        self.next_seq += 1
        text = json.dumps(frame)
        self.unacked[frame["seq"]] = text
        if self.ws is not None:
            try:
                await self.ws.send(text)
            except Exception:
                pass  # resent after the resume

    async def request(self, name, data, timeout=20):
        await self.connected.wait()
        rid = next(self.ids)
        fut = asyncio.get_running_loop().create_future()
        self.waiting[rid] = fut
        await self.send_sequenced({"type": "request", "id": rid, "name": name, "data": data})
        try:
            return await asyncio.wait_for(fut, timeout)
        finally:
            self.waiting.pop(rid, None)

    async def ack(self):
        if self.ws is not None:
            await self.ws.send(json.dumps({"type": "ack", "ack": self.last_seen}))

    async def hello(self):
        hello = {"type": "hello", "version": PROTOCOL_VERSION, "role": "plugin", "token": self.token,
                 "name": NAME, "software": "discord_bridge " + VERSION, "plugin": DECLARATION}
        if self.session:
            hello["resume"] = {"session": self.session, "last_seq": self.last_seen}
        await self.ws.send(json.dumps(hello))
        ready = json.loads(await self.ws.recv())
        if ready.get("type") != "ready":
            return ready
        if not ready.get("resumed"):
            # A new session: our old unacknowledged frames belong to the old one.
            self.unacked.clear()
            self.next_seq = 1
            self.last_seen = 0
            self.received = 0
            self.generation += 1
            for fut in self.waiting.values():
                if not fut.done():
                    fut.set_exception(ConnectionError("session replaced"))
        else:
            for seq in sorted(self.unacked):
                if seq > ready.get("last_seq", 0):
                    await self.ws.send(self.unacked[seq])
        self.session = ready["session"]
        return ready


class Bridge:
    def __init__(self):
        self.link = Link(socket_url(os.environ.get("CLUSTORIO_URL", "http://127.0.0.1:8081")),
                         os.environ.get("CLUSTORIO_PLUGIN_TOKEN", ""))
        self.webhook = os.environ.get("WEBHOOK_URL", "")
        self.inbox = asyncio.Queue()
        self.posted = 0
        self.loop = None

    # ---- to the webhook -------------------------------------------------------------------
    def post_webhook(self, content, username):
        body = json.dumps({"content": content[:2000], "username": username[:80],
                           "allowed_mentions": {"parse": []}}).encode()
        req = urllib.request.Request(self.webhook, data=body, method="POST",
                                     headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=10) as resp:
            resp.read()

    async def post(self, content, username):
        if not self.webhook:
            log("no WEBHOOK_URL; would post:", content)
            return
        for attempt in range(5):
            try:
                await asyncio.to_thread(self.post_webhook, content, username)
                self.posted += 1
                return
            except (urllib.error.URLError, OSError) as e:
                log("webhook post failed (%s); retrying" % e)
                await asyncio.sleep(0.5 * (attempt + 1))
        log("giving up on a webhook post:", content)

    def describe(self, name, data):
        inst = data.get("instance", "?")
        if name == "chat":
            return "**%s**: %s" % (data.get("player"), data.get("message")), inst
        if name == "player_join":
            return "%s joined the game" % data.get("player"), inst
        if name == "player_leave":
            return "%s left the game" % data.get("player"), inst
        if name == "instance_status" and data.get("status") == "crashed":
            message = (data.get("message") or "").splitlines()
            return "Instance crashed: %s" % (message[0] if message else "no message"), inst
        if name == "ipc" and data.get("channel") == "discord_bridge:announce":
            payload = data.get("data") or {}
            text = payload.get("text") if isinstance(payload, dict) else str(payload)
            return str(text), inst
        return None, inst

    async def handle(self, frame):
        """One sequenced frame from the controller, in order; acknowledged once handled."""
        kind = frame.get("type")
        if kind == "event":
            content, inst = self.describe(frame.get("name"), frame.get("data") or {})
            if content is not None:
                await self.post(content, inst)
        elif kind == "request":
            rid = frame.get("id")
            if frame.get("name") == "discord_bridge.status":
                result = {"ok": {"posted": self.posted, "webhook": bool(self.webhook)}}
            else:
                result = {"error": {"code": "unknown_request",
                                    "message": "discord_bridge has no request %s" % frame.get("name")}}
            await self.link.send_sequenced(dict({"type": "response", "id": rid}, **result))
        elif kind == "response":
            fut = self.link.waiting.get(frame.get("id"))
            if fut is not None and not fut.done():
                if frame.get("error"):
                    fut.set_exception(RuntimeError("%s: %s" % (frame["error"].get("code"),
                                                              frame["error"].get("message"))))
                else:
                    fut.set_result(frame.get("ok"))

    async def worker(self):
        while True:
            generation, frame = await self.inbox.get()
            if generation != self.link.generation:
                continue  # from a session that ended; the controller redelivers what counts
            try:
                await self.handle(frame)
            except Exception as e:  # one bad message must not stop the bridge
                log("handling a frame failed:", e)
            self.link.last_seen = max(self.link.last_seen, frame["seq"])
            try:
                await self.link.ack()
            except Exception:
                pass

    # ---- from the webhook side into the games ---------------------------------------------
    async def type_into_games(self, content, instance):
        instances = await self.link.request("instance_list", {})
        targets = [i for i in instances if i["enabled"] and i["status"] == "running"
                   and (instance is None or i["name"] == instance or str(i["id"]) == str(instance))]
        if instance is not None and not targets:
            raise LookupError("no running instance '%s' with the bridge enabled" % instance)
        sent = []
        for i in targets:
            prefix = (i.get("config") or {}).get("prefix") or "[Discord]"
            command = "/sc game.print(%s)" % lua_string("%s %s" % (prefix, content))
            await self.link.request("instance_rcon", {"instance": i["id"], "command": command})
            sent.append(i["name"])
        return sent

    def serve_http(self, listen):
        bridge = self
        host, port = listen.rsplit(":", 1)

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def reply(self, status, body):
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_POST(self):
                try:
                    length = int(self.headers.get("Content-Length") or 0)
                    if length > 64 * 1024:
                        return self.reply(413, {"error": "body too large"})
                    body = json.loads(self.rfile.read(length) or b"{}")
                    content = body.get("content")
                    instance = body.get("instance")
                    if not isinstance(content, str) or not content.strip():
                        return self.reply(400, {"error": "\"content\" must be a non-empty string"})
                    if instance is not None and not isinstance(instance, (str, int)):
                        return self.reply(400, {"error": "\"instance\" must be a name, an id or null"})
                except (ValueError, AttributeError):
                    return self.reply(400, {"error": "the body must be a JSON object"})
                future = asyncio.run_coroutine_threadsafe(
                    bridge.type_into_games(content.strip(), instance), bridge.loop)
                try:
                    sent = future.result(timeout=30)
                    self.reply(200, {"sent_to": sent})
                except LookupError as e:
                    self.reply(404, {"error": str(e)})
                except Exception as e:
                    self.reply(502, {"error": str(e)})

        server = ThreadingHTTPServer((host, int(port)), Handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server.server_address[1]

    # ---- the connection -------------------------------------------------------------------
    async def run(self):
        self.loop = asyncio.get_running_loop()
        port = self.serve_http(os.environ.get("LISTEN", "127.0.0.1:8090"))
        asyncio.create_task(self.worker())
        announced = False
        delay = 0.5
        while True:
            try:
                async with connect(self.link.url, max_size=8 * 1024 * 1024) as ws:
                    self.link.ws = ws
                    ready = await self.link.hello()
                    if ready.get("type") != "ready":
                        code, message = ready.get("code"), ready.get("message")
                        print("refused: %s: %s" % (code, message), flush=True)
                        if code in FATAL:
                            return 2
                        raise ConnectionError(message)
                    self.link.connected.set()
                    delay = 0.5
                    if not announced:
                        print("bridge ready: listening on port %d, session %s, %d queued"
                              % (port, ready["session"], ready.get("plugin", {}).get("queued", 0)),
                              flush=True)
                        announced = True
                    async for text in ws:
                        frame = json.loads(text)
                        kind = frame.get("type")
                        if "ack" in frame and isinstance(frame.get("ack"), int):
                            for seq in [s for s in self.link.unacked if s <= frame["ack"]]:
                                del self.link.unacked[seq]
                        if kind == "ping":
                            await ws.send(json.dumps({"type": "pong", "ack": self.link.last_seen}))
                        elif kind == "close":
                            print("closed by the controller: %s: %s"
                                  % (frame.get("code"), frame.get("message")), flush=True)
                            if frame.get("code") in FATAL:
                                return 2
                        elif kind == "error":
                            log("controller error:", frame.get("code"), frame.get("message"))
                        elif "seq" in frame:
                            if frame["seq"] <= self.link.received:
                                await self.link.ack()  # a resend we already have
                            else:
                                self.link.received = frame["seq"]
                                await self.inbox.put((self.link.generation, frame))
            except (OSError, ConnectionError) as e:
                log("link down (%s); reconnecting" % e)
            except Exception as e:  # websockets' ConnectionClosed and friends
                log("link down (%s); reconnecting" % type(e).__name__)
            self.link.connected.clear()
            self.link.ws = None
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10)


def main():
    if not os.environ.get("CLUSTORIO_PLUGIN_TOKEN"):
        print("CLUSTORIO_PLUGIN_TOKEN is not set (create one: clustorio ctl plugin token %s)" % NAME,
              file=sys.stderr)
        return 2
    try:
        return asyncio.run(Bridge().run())
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())

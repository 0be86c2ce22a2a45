// The link client (role "control"): one WebSocket at api/socket that pushes events.
//
// hello → ready (session) → event frames with seq. We ack now and then and answer ping with
// pong; after a drop we reconnect with backoff and send hello with resume {session, last_seq},
// so events missed during a short drop are resent exactly once. When the controller could not
// resume (it restarted, or the window passed), ready.resumed is false and the app reloads its
// state over REST.

import { socketUrl } from "./api.js";

const PROTOCOL_VERSION = 1;
const ACK_EVERY = 32;
const ACK_DELAY_MS = 1000;
const BACKOFF_MS = [250, 500, 1000, 2000, 3000, 5000];
/** Handshake refusals that a retry cannot fix. */
const FATAL = new Set(["unauthorized", "forbidden", "version_mismatch", "bad_handshake"]);

export class Link {
  /**
   * handlers: onReady(ready), onEvent(name, data), onAway(attempt), onRefused({code, message}),
   * onFirstFailure(message) (the very first connection could not be made).
   */
  constructor(token, handlers) {
    this.token = token;
    this.h = handlers;
    this.session = null;
    this.lastSeq = 0;
    this.acked = 0;
    this.attempt = 0;
    this.everReady = false;
    this.stopped = false;
    this.ws = null;
    this.ackTimer = null;
    this.retryTimer = null;
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.retryTimer);
    clearTimeout(this.ackTimer);
    if (this.ws) {
      const ws = this.ws;
      this.ws = null;
      ws.close(1000, "logout");
    }
  }

  send(frame) {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify(frame));
  }

  connect() {
    let ws;
    try {
      ws = new WebSocket(socketUrl());
    } catch (e) {
      this.retry();
      return;
    }
    this.ws = ws;
    let refused = null;
    ws.addEventListener("open", () => {
      const hello = { type: "hello", version: PROTOCOL_VERSION, role: "control", token: this.token, software: "clustorio-web" };
      if (this.session) hello.resume = { session: this.session, last_seq: this.lastSeq };
      ws.send(JSON.stringify(hello));
    });
    ws.addEventListener("message", (e) => {
      if (this.ws !== ws) return;
      let f;
      try {
        f = JSON.parse(e.data);
      } catch {
        return;
      }
      switch (f.type) {
        case "ready":
          if (!f.resumed) {
            this.lastSeq = 0;
            this.acked = 0;
          }
          this.session = f.session;
          this.attempt = 0;
          this.everReady = true;
          this.h.onReady(f);
          break;
        case "event":
          if (typeof f.seq === "number") {
            if (f.seq <= this.lastSeq) return; // a resend we already have
            this.lastSeq = f.seq;
            this.scheduleAck();
          }
          this.h.onEvent(f.name, f.data);
          break;
        case "response":
          if (typeof f.seq === "number" && f.seq > this.lastSeq) {
            this.lastSeq = f.seq;
            this.scheduleAck();
          }
          break;
        case "ping":
          this.send({ type: "pong", ack: this.lastSeq });
          this.acked = this.lastSeq;
          break;
        case "close":
          refused = { code: f.code, message: f.message };
          break;
        default:
          break;
      }
    });
    ws.addEventListener("close", () => {
      if (this.ws !== ws) return;
      this.ws = null;
      clearTimeout(this.ackTimer);
      if (this.stopped) return;
      if (refused && FATAL.has(refused.code)) {
        this.stopped = true;
        this.h.onRefused(refused);
        return;
      }
      if (!this.everReady && this.attempt === 0 && this.h.onFirstFailure) {
        this.h.onFirstFailure(refused ? refused.message : "Cannot reach the controller.");
      }
      this.retry();
    });
  }

  retry() {
    if (this.stopped) return;
    const delay = BACKOFF_MS[Math.min(this.attempt, BACKOFF_MS.length - 1)];
    this.attempt++;
    this.h.onAway(this.attempt);
    this.retryTimer = setTimeout(() => this.connect(), delay);
  }

  scheduleAck() {
    if (this.lastSeq - this.acked >= ACK_EVERY) {
      this.ack();
      return;
    }
    if (!this.ackTimer) this.ackTimer = setTimeout(() => this.ack(), ACK_DELAY_MS);
  }

  ack() {
    clearTimeout(this.ackTimer);
    this.ackTimer = null;
    if (this.lastSeq > this.acked) {
      this.send({ type: "ack", ack: this.lastSeq });
      this.acked = this.lastSeq;
    }
  }
}

// Following a job's events over Server-Sent Events with fetch() and a ReadableStream (EventSource cannot
// send the Authorization header). Reconnects with Last-Event-ID after a dropped connection or when the
// server ends a long stream, and stops after the event of a terminal state.

import { ApiError, authHeaders } from "./api.js";

const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

export function isTerminalEvent(event) {
  return event.kind === "state" && TERMINAL.has(event.data && event.data.status);
}

/** Split an SSE byte stream into events: {id, event, data} per blank-line-terminated block. */
export function createParser(onMessage) {
  let buffer = "";
  let fields = { id: null, event: "message", data: [] };
  return (chunk) => {
    buffer += chunk;
    const lines = buffer.split(/\r\n|\r|\n/);
    buffer = lines.pop();
    for (const line of lines) {
      if (line === "") {
        if (fields.data.length) onMessage({ id: fields.id, event: fields.event, data: fields.data.join("\n") });
        fields = { id: fields.id, event: "message", data: [] };
        continue;
      }
      if (line.startsWith(":")) continue; // a comment: the server's keep-alive
      const colon = line.indexOf(":");
      const name = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (name === "data") fields.data.push(value);
      else if (name === "event") fields.event = value;
      else if (name === "id") fields.id = value;
    }
  };
}

/**
 * follow(jobId, {onEvent, onState, signal}) -> Promise resolved when the job reached a terminal state (or the
 * signal aborted). onState("live" | "reconnecting" | "closed") tells the page about the connection.
 * 4xx answers are not retried (they reject with an ApiError); connection failures are, with backoff.
 */
export async function follow(jobId, { onEvent, onState = () => {}, signal, maxFailures = 8 } = {}) {
  let lastId = null;
  let failures = 0;
  let done = false;
  while (!done && !(signal && signal.aborted)) {
    const headers = { Accept: "text/event-stream", ...authHeaders() };
    if (lastId !== null) headers["Last-Event-ID"] = lastId;
    try {
      const response = await fetch(`/v1/jobs/${encodeURIComponent(jobId)}/events/stream`, { headers, signal });
      if (response.status >= 400 && response.status < 500) {
        let body = null;
        try {
          body = await response.json();
        } catch {
          // not JSON
        }
        const error = (body && body.error) || { code: "http_error", message: response.statusText };
        throw new ApiError(response.status, error.code, error.message, error.field);
      }
      if (!response.ok || !response.body) throw new Error(`stream answered ${response.status}`);
      onState("live");
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      const parse = createParser((message) => {
        let event;
        try {
          event = JSON.parse(message.data);
        } catch {
          return;
        }
        lastId = message.id || String(event.id);
        failures = 0;
        onEvent(event);
        if (isTerminalEvent(event)) done = true;
      });
      for (;;) {
        const { value, done: ended } = await reader.read();
        if (ended) break;
        parse(value);
      }
      // A clean end before a terminal state: the server's maximum stream duration. Reconnect at once.
    } catch (error) {
      if (error instanceof ApiError || (signal && signal.aborted) || error.name === "AbortError") {
        onState("closed");
        if (error instanceof ApiError) throw error;
        return;
      }
      failures += 1;
      if (failures > maxFailures) {
        onState("closed");
        throw new ApiError(0, "stream_lost", "lost the connection to the server");
      }
      onState("reconnecting");
      const delay = Math.min(500 * 2 ** (failures - 1), 15_000);
      await new Promise((resolve) => setTimeout(resolve, delay));
    }
  }
  onState("closed");
}

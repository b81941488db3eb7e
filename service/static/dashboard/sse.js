// Server-Sent Events over fetch(): unlike EventSource it can send an Authorization header.

/** Turns text chunks into events ({type, data, id}) as the SSE specification parses them. */
export class SseParser {
  constructor() {
    this.pending = "";
    this.reset();
    this.lastId = null;
  }

  reset() {
    this.type = "";
    this.data = [];
  }

  push(text) {
    const events = [];
    this.pending += text;
    // a chunk that ends in "\r" may continue with "\n": keep it until the next chunk
    const lines = this.pending.split(/\r\n|\r(?!$)|\n/);
    this.pending = lines.pop();
    for (const line of lines) {
      const event = this.line(line);
      if (event) events.push(event);
    }
    return events;
  }

  line(line) {
    if (line === "") {
      if (this.data.length === 0) {
        this.reset();
        return null;
      }
      const event = { type: this.type || "message", data: this.data.join("\n"), id: this.lastId };
      this.reset();
      return event;
    }
    if (line.startsWith(":")) return null; // a comment: the keep-alive
    const colon = line.indexOf(":");
    const field = colon === -1 ? line : line.slice(0, colon);
    let value = colon === -1 ? "" : line.slice(colon + 1);
    if (value.startsWith(" ")) value = value.slice(1);
    if (field === "event") this.type = value;
    else if (field === "data") this.data.push(value);
    else if (field === "id" && !value.includes("\0")) this.lastId = value;
    return null;
  }
}

/**
 * Keeps one stream open until `signal` aborts: calls onEvent(event) for each event,
 * onState("open" | "retrying" | "unavailable", detail) as the connection changes, and
 * resumes after a drop with Last-Event-ID. `headers()` gives the request's headers.
 */
export async function follow(url, { headers, onEvent, onState, signal }) {
  const parser = new SseParser();
  let delay = 500;
  while (!signal.aborted) {
    try {
      const extra = parser.lastId === null ? {} : { "Last-Event-ID": parser.lastId };
      const response = await fetch(url, {
        headers: { Accept: "text/event-stream", ...headers(), ...extra },
        cache: "no-store",
        signal,
      });
      if (!response.ok || !response.body) {
        const final = [401, 403, 404, 405].includes(response.status);
        onState(final ? "unavailable" : "retrying", response.status);
        if (final) return;
      } else {
        onState("open");
        delay = 500;
        const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          for (const event of parser.push(value)) onEvent(event);
        }
        onState("retrying", "closed");
      }
    } catch (error) {
      if (signal.aborted) return;
      onState("retrying", String(error));
    }
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 10_000);
  }
}

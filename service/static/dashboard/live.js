// Live mode: one stream per metric; each changed bucket goes to its chart as it comes.

import { authHeaders, METRICS, streamUrl } from "./api.js";
import { follow } from "./sse.js";
import { toRow } from "./view.js";

const WORDS = {
  open: "on: new readings appear as they arrive",
  retrying: "reconnecting…",
  unavailable: "not available from this service",
};

/**
 * Starts the streams of `user` at `interval`; `onRow(metric, row)` gets each bucket,
 * `onState(text, status)` the connection's state. Returns a function that stops them.
 */
export function startLive(user, interval, { onRow, onState, onUnauthorized }) {
  const stop = new AbortController();
  const states = {};
  const report = (metric, state, detail) => {
    states[metric] = state;
    if (detail === 401) onUnauthorized();
    const all = Object.values(states);
    // the worst state of the three streams is the one to tell
    const shown = ["unavailable", "retrying", "open"].find((s) => all.includes(s));
    onState(WORDS[shown], shown);
  };
  for (const metric of Object.keys(METRICS)) {
    follow(streamUrl(metric, user, interval), {
      headers: authHeaders,
      signal: stop.signal,
      onState: (state, detail) => report(metric, state, detail),
      onEvent: (event) => {
        if (event.type !== "bucket") return;
        let bucket;
        try {
          bucket = JSON.parse(event.data);
        } catch {
          return;
        }
        onRow(metric, toRow(metric, bucket));
      },
    });
  }
  return () => stop.abort();
}

// Ranges and intervals: which buckets a view asks for. Pure functions, no DOM.

export const INTERVALS = [
  ["1s", 1_000, "1 second"],
  ["1m", 60_000, "1 minute"],
  ["5m", 300_000, "5 minutes"],
  ["15m", 900_000, "15 minutes"],
  ["30m", 1_800_000, "30 minutes"],
  ["1h", 3_600_000, "1 hour"],
  ["1d", 86_400_000, "1 day"],
];
export const RANGES = { "1h": 3_600_000, "24h": 86_400_000, "7d": 604_800_000, "30d": 2_592_000_000 };
// the server refuses more (HR_MAX_BUCKETS default); the default interval keeps a chart light
export const MAX_BUCKETS = 44_640;
export const COMFORTABLE_BUCKETS = 2_000;
export const ZONE = Intl.DateTimeFormat().resolvedOptions().timeZone || "UTC";

export function widthOf(interval) {
  const found = INTERVALS.find(([name]) => name === interval);
  return found ? found[1] : 60_000;
}

export function bucketsIn(spanMs, interval) {
  return Math.ceil(spanMs / widthOf(interval));
}

/** The narrowest interval that keeps the span under COMFORTABLE_BUCKETS buckets. */
export function defaultInterval(spanMs) {
  const fit = INTERVALS.find(([name]) => bucketsIn(spanMs, name) <= COMFORTABLE_BUCKETS);
  return fit ? fit[0] : "1d";
}

/** {startMs, endMs} of a relative range ending now; sub-hour buckets end at the current one. */
export function window(range, interval, nowMs = Date.now(), custom = null) {
  if (range === "custom") {
    return custom;
  }
  const width = widthOf(interval);
  const end = width < 3_600_000 ? Math.ceil((nowMs + 1) / width) * width : nowMs;
  return { startMs: end - RANGES[range], endMs: end };
}

/** A local "YYYY-MM-DDTHH:MM" for a datetime-local input. */
export function localInput(ms) {
  const d = new Date(ms - new Date(ms).getTimezoneOffset() * 60_000);
  return d.toISOString().slice(0, 16);
}

const STAMP = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });
export function formatStamp(ms) {
  return STAMP.format(new Date(ms));
}

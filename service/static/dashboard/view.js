// What the page says in words: tiles, the charts' text alternatives, tables, messages.

import { METRICS } from "./api.js";
import { formatStamp } from "./time.js";

const NUMBER = new Intl.NumberFormat(undefined, { maximumFractionDigits: 1 });
const TABLE_ROWS = 5_000; // a longer table would take seconds to lay out

export const fmt = (v) => (v === null || v === undefined ? "–" : NUMBER.format(v));

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) node.setAttribute(name, value);
  node.append(...children.filter((c) => c !== null && c !== undefined));
  return node;
}

function tile(label, value, unit, note = "") {
  return el(
    "div",
    { class: "tile" },
    el("dt", {}, label),
    el("dd", {}, el("span", { class: "value" }, value), unit ? ` ${unit}` : "", note ? el("small", {}, note) : null),
  );
}

export function renderTiles(box, summary) {
  const hr = summary.heart_rate;
  const tiles = [
    tile("Mean heart rate", fmt(hr?.mean), "bpm", hr ? `${fmt(hr.count)} readings` : "no readings"),
    tile("Resting heart rate", fmt(hr?.resting), "bpm", "lowest 5-minute mean"),
    tile("Heart-rate range", hr ? `${fmt(hr.min)}–${fmt(hr.max)}` : "–", "bpm"),
    tile("Steps", fmt(summary.steps?.total), "", summary.steps ? `${fmt(summary.steps.minutes)} active minutes` : "no readings"),
    tile("Calories", fmt(summary.calories?.total), "kcal", summary.calories ? `${fmt(summary.calories.minutes)} minutes` : "no readings"),
    tile("Devices", String(summary.devices.length), "", summary.devices.map((d) => d.device_id).join(", ")),
  ];
  box.replaceChildren(el("dl", { class: "tiles" }, ...tiles));
}

/** One sentence a screen reader can read instead of the chart. */
export function describe(metric, rows, colours) {
  const { label, unit } = METRICS[metric];
  if (rows.length === 0) return `${label}: no readings in this range.`;
  const from = formatStamp(rows[0].t);
  const to = formatStamp(rows[rows.length - 1].t);
  const values = rows.map((r) => r.value);
  const head = `${label}: ${fmt(rows.length)} buckets from ${from} to ${to}`;
  if (metric !== "heart") {
    const total = values.reduce((a, b) => a + b, 0);
    return `${head}; total ${fmt(total)} ${unit}, largest bucket ${fmt(Math.max(...values))} ${unit}.`;
  }
  const mean = values.reduce((a, b) => a + b, 0) / values.length;
  const lows = rows.map((r) => r.min ?? r.value);
  const highs = rows.map((r) => r.max ?? r.value);
  const devices = [...colours.keys()].join(", ");
  return `${head}; average of bucket means ${fmt(mean)} ${unit}, lowest ${fmt(Math.min(...lows))}, highest ${fmt(Math.max(...highs))}; devices ${devices}.`;
}

export function renderLegend(box, colours) {
  const items = [...colours].map(([device, colour]) =>
    el("li", {}, el("span", { class: "swatch", style: `background:${colour}`, "aria-hidden": "true" }), device),
  );
  box.replaceChildren(...items);
}

export function renderTable(box, metric, rows) {
  const { label, unit } = METRICS[metric];
  const shown = rows.slice(-TABLE_ROWS);
  const head = el("tr", {}, ...["Bucket start", `${label} (${unit})`, "Min", "Max", "Readings", "Device"].map((h) => el("th", { scope: "col" }, h)));
  const body = el("tbody");
  const lines = shown.map((r) =>
    el("tr", {}, el("td", {}, formatStamp(r.t)), el("td", {}, fmt(r.value)), el("td", {}, fmt(r.min)), el("td", {}, fmt(r.max)), el("td", {}, fmt(r.count)), el("td", {}, r.device)),
  );
  body.append(...lines);
  const caption = shown.length < rows.length ? `${label}: the last ${fmt(shown.length)} of ${fmt(rows.length)} buckets` : `${label}: ${fmt(rows.length)} buckets`;
  box.replaceChildren(el("table", {}, el("caption", {}, caption), el("thead", {}, head), body));
}

/** A bucket of the API (series element or stream event) as a chart row. */
export function toRow(metric, bucket) {
  return {
    t: Date.parse(bucket.timestamp),
    value: bucket[METRICS[metric].field],
    min: bucket.min ?? null,
    max: bucket.max ?? null,
    count: bucket.count ?? null,
    device: bucket.device_id,
  };
}

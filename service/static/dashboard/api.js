// The service's JSON API as the dashboard uses it: the key, the error shape, the paths.

const KEY = "hr-dashboard-api-key"; // sessionStorage only: gone when the browser session ends

export const METRICS = {
  heart: { stem: "heart-rate", field: "heart_rate", label: "Heart rate", unit: "bpm" },
  steps: { stem: "steps", field: "steps", label: "Steps", unit: "steps" },
  calories: { stem: "calories", field: "calories", label: "Calories", unit: "kcal" },
};

/** A failed call: `kind` is "network", "unauthorized", "forbidden", "not_found" or "failed". */
export class ApiError extends Error {
  constructor(kind, status, message) {
    super(message);
    this.kind = kind;
    this.status = status;
  }
}

export function apiKey() {
  try {
    return sessionStorage.getItem(KEY);
  } catch {
    return null;
  }
}

export function setApiKey(key) {
  try {
    if (key) sessionStorage.setItem(KEY, key);
    else sessionStorage.removeItem(KEY);
  } catch {
    // storage refused (private mode): the key then lasts as long as the page
  }
  memoryKey = key || null;
}

let memoryKey = null;

export function authHeaders() {
  const key = apiKey() || memoryKey;
  return key ? { Authorization: `Bearer ${key}` } : {};
}

const KINDS = { 401: "unauthorized", 403: "forbidden", 404: "not_found" };

function reasonOf(body, status) {
  const detail = body && Array.isArray(body.detail) ? body.detail[0] : null;
  if (detail && detail.reason) {
    return detail.field ? `${detail.field}: ${detail.reason}` : detail.reason;
  }
  return `the service answered ${status}`;
}

/** GET `path` with `params`; the parsed JSON, or an ApiError. */
export async function getJson(path, params = {}, signal = undefined) {
  const query = new URLSearchParams(params).toString();
  let response;
  try {
    response = await fetch(query ? `${path}?${query}` : path, {
      headers: { Accept: "application/json", ...authHeaders() },
      signal,
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError("network", 0, "The service cannot be reached. Is it running?");
  }
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  if (!response.ok) {
    const kind = KINDS[response.status] || "failed";
    throw new ApiError(kind, response.status, reasonOf(body, response.status));
  }
  return body;
}

export function seriesParams(user, view, withStats) {
  const params = {
    user_id: user,
    start: new Date(view.startMs).toISOString(),
    end: new Date(view.endMs).toISOString(),
    interval: view.interval,
    tz: view.zone,
  };
  if (withStats) params.stats = "min,max,count";
  return params;
}

export function streamUrl(metric, user, interval) {
  const query = new URLSearchParams({ user_id: user, interval }).toString();
  return `/metrics/${METRICS[metric].stem}/stream?${query}`;
}

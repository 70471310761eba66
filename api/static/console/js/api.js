// The API client: bearer key from sessionStorage (never localStorage), JSON in and out, errors as ApiError.

const KEY = "gisp.apiKey";

export class ApiError extends Error {
  constructor(status, code, message, field = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

export function getKey() {
  return sessionStorage.getItem(KEY);
}

export function setKey(key) {
  sessionStorage.setItem(KEY, key);
}

export function forgetKey() {
  sessionStorage.removeItem(KEY);
}

export function authHeaders(key = getKey()) {
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function errorOf(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: a proxy's page, say
  }
  const error = body && body.error;
  if (error && error.code) return new ApiError(response.status, error.code, error.message, error.field);
  return new ApiError(response.status, "http_error", `${response.status} ${response.statusText}`);
}

/**
 * request("GET", "/v1/jobs") -> parsed JSON body; throws ApiError on 4xx/5xx and on network failure.
 * options: json (a body to send as JSON), form (a FormData), key (override), signal, raw (return the Response).
 */
export async function request(method, path, options = {}) {
  const headers = { Accept: "application/json", ...authHeaders(options.key), ...(options.headers || {}) };
  let body;
  if (options.json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(options.json);
  } else if (options.form) {
    body = options.form;
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, signal: options.signal });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError(0, "network_error", "the server cannot be reached");
  }
  if (response.status === 401 && !options.key) {
    window.dispatchEvent(new CustomEvent("gisp:unauthorized"));
  }
  if (!response.ok) throw await errorOf(response);
  if (options.raw) return response;
  if (response.status === 204) return null;
  return response.json();
}

export const get = (path, options) => request("GET", path, options);
export const post = (path, options) => request("POST", path, options);

/** Enum values of a schema in the API's own OpenAPI document (one source for the form's choices). */
let openapi = null;
export async function enumValues(schemaName, fallback) {
  try {
    openapi = openapi || (await get("/v1/openapi.json"));
    const values = openapi.components.schemas[schemaName].enum;
    return Array.isArray(values) && values.length ? values : fallback;
  } catch {
    return fallback;
  }
}

/**
 * Download a checkpoint as a tar file: polls while the server materialises it (202), then saves the archive.
 * onStatus(text) reports progress. Resolves to the file name.
 */
export async function downloadCheckpoint(jobId, label, { onStatus = () => {}, signal } = {}) {
  const path = `/v1/jobs/${encodeURIComponent(jobId)}/checkpoints/${encodeURIComponent(label)}`;
  for (;;) {
    const response = await request("GET", path, { raw: true, signal, headers: { Accept: "application/x-tar" } });
    if (response.status === 202) {
      const wait = Number(response.headers.get("Retry-After") || "2");
      onStatus(`Materialising the checkpoint at ${label}…`);
      await new Promise((resolve) => setTimeout(resolve, Math.min(Math.max(wait, 1), 10) * 1000));
      continue;
    }
    onStatus("Downloading…");
    const blob = await response.blob();
    const name = `${jobId}-${label}.tar`;
    const url = URL.createObjectURL(blob);
    const link = document.createElement("a");
    link.href = url;
    link.download = name;
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    onStatus(`Saved ${name}`);
    return name;
  }
}

// The REST API client. Every URL is derived from the page's own address, so the UI works the
// same at the server's root and behind a reverse proxy under a sub-path.

const TOKEN_KEY = "clustorio.token";

/** Absolute URL of an API path ("instances/3") relative to where the page was served. */
export function apiUrl(path) {
  return new URL(`api/v1/${path}`, document.baseURI).href;
}

/** The WebSocket URL of the link, on the same origin and sub-path as the page. */
export function socketUrl() {
  const u = new URL("api/socket", document.baseURI);
  u.protocol = u.protocol === "https:" ? "wss:" : "ws:";
  return u.href;
}

export function storedToken() {
  try {
    return localStorage.getItem(TOKEN_KEY) || "";
  } catch {
    return "";
  }
}

export function storeToken(token) {
  try {
    if (token) localStorage.setItem(TOKEN_KEY, token);
    else localStorage.removeItem(TOKEN_KEY);
  } catch {
    // Private mode without storage: the session still works until the tab closes.
  }
}

let token = storedToken();
let onUnauthorized = () => {};

export function setToken(t) {
  token = t;
}

/** Called when the controller refuses the token (revoked while logged in). */
export function setUnauthorizedHandler(f) {
  onUnauthorized = f;
}

export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    /** The setting a refused config names, e.g. "server_settings.max_players". */
    this.field = field;
  }
}

function errorFrom(status, text) {
  try {
    const v = JSON.parse(text);
    if (v && v.error) return new ApiError(status, v.error.code, v.error.message, v.error.field);
  } catch {
    // not JSON: fall through
  }
  return new ApiError(status, "http", text ? `${status}: ${text.slice(0, 200)}` : `HTTP ${status}`);
}

/** A JSON request; resolves to the parsed reply or throws an ApiError. */
export async function api(method, path, body) {
  const headers = { Authorization: `Bearer ${token}` };
  const init = { method, headers };
  if (body !== undefined) {
    headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  let resp;
  try {
    resp = await fetch(apiUrl(path), init);
  } catch {
    throw new ApiError(0, "network", "Cannot reach the controller. Is it running?");
  }
  const text = await resp.text();
  if (!resp.ok) {
    const err = errorFrom(resp.status, text);
    if (resp.status === 401) onUnauthorized(err);
    throw err;
  }
  return text ? JSON.parse(text) : null;
}

export const get = (path) => api("GET", path);
export const post = (path, body = {}) => api("POST", path, body);
export const patch = (path, body) => api("PATCH", path, body);
export const del = (path) => api("DELETE", path);

/** One path segment, encoded (names may hold spaces and dots). */
export const seg = (s) => encodeURIComponent(String(s));

/**
 * Uploads a file with PUT, reporting progress(fraction 0..1) as it goes. XHR, not fetch: only
 * XHR reports upload progress.
 */
export function upload(path, file, progress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("PUT", apiUrl(path));
    xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.setRequestHeader("Content-Type", "application/zip");
    xhr.upload.addEventListener("progress", (e) => {
      if (e.lengthComputable) progress(e.loaded / e.total);
    });
    xhr.addEventListener("load", () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        progress(1);
        try {
          resolve(JSON.parse(xhr.responseText));
        } catch {
          resolve(null);
        }
      } else {
        const err = errorFrom(xhr.status, xhr.responseText);
        if (xhr.status === 401) onUnauthorized(err);
        reject(err);
      }
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "network", "The upload failed: connection lost.")));
    xhr.addEventListener("abort", () => reject(new ApiError(0, "aborted", "The upload was cancelled.")));
    xhr.send(file);
  });
}

/**
 * Downloads a file (the API needs the Authorization header, so a plain link cannot) and hands
 * it to the browser as `filename`, reporting progress(fraction or null when the size is unknown).
 */
export function download(path, filename, progress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("GET", apiUrl(path));
    xhr.setRequestHeader("Authorization", `Bearer ${token}`);
    xhr.responseType = "blob";
    xhr.addEventListener("progress", (e) => progress(e.lengthComputable ? e.loaded / e.total : null));
    xhr.addEventListener("load", async () => {
      if (xhr.status >= 200 && xhr.status < 300) {
        progress(1);
        const url = URL.createObjectURL(xhr.response);
        const a = document.createElement("a");
        a.href = url;
        a.download = filename;
        document.body.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 60_000);
        resolve();
      } else {
        const text = xhr.response ? await xhr.response.text() : "";
        const err = errorFrom(xhr.status, text);
        if (xhr.status === 401) onUnauthorized(err);
        reject(err);
      }
    });
    xhr.addEventListener("error", () => reject(new ApiError(0, "network", "The download failed: connection lost.")));
    xhr.send();
  });
}

// Every request the page makes: the x-key header, JSON in and out, and errors a person can
// read. Paths are relative ("v1/info"), resolved against the page, so the page also works
// behind a proxy that serves it under a prefix.

const KEY_STORE = "openkontext.key";

export class ApiError extends Error {
  // status: the HTTP status, 0 when the server could not be reached.
  // field: the request field a 422 names (e.g. "input_image").
  // retryAfter: seconds, from a 429's Retry-After header.
  constructor(message, { status = 0, field = null, retryAfter = null } = {}) {
    super(message);
    this.status = status;
    this.field = field;
    this.retryAfter = retryAfter;
  }

  get offline() {
    return this.status === 0;
  }
}

export const apiKey = {
  get: () => localStorage.getItem(KEY_STORE) || "",
  set: (value) => localStorage.setItem(KEY_STORE, value),
  clear: () => localStorage.removeItem(KEY_STORE),
};

// Set by the page: async (message) => the key entered, or null when the person declines.
let askForKey = null;
export function onKeyNeeded(ask) {
  askForKey = ask;
}

export function apiUrl(path) {
  return new URL(path, document.baseURI).href;
}

// -> the parsed JSON (null for 204), or a Blob with {blob: true}. Throws ApiError.
export async function request(method, path, { body, blob = false } = {}) {
  for (;;) {
    const headers = {};
    const key = apiKey.get();
    if (key) headers["x-key"] = key;
    if (body !== undefined) headers["content-type"] = "application/json";
    let response;
    try {
      response = await fetch(apiUrl(path), {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store",
      });
    } catch {
      throw new ApiError("Cannot reach the server: is `openkontext serve` still running?");
    }
    if ((response.status === 401 || response.status === 403) && askForKey) {
      const detail = await readDetail(response);
      const why = response.status === 401 ? "This server needs an API key." : "That key was refused.";
      const entered = await askForKey(detail ? `${why} (${detail})` : why);
      if (entered) continue;
      throw new ApiError("No API key: the server refuses requests without one.", {
        status: response.status,
      });
    }
    if (!response.ok) throw await errorFrom(response);
    if (response.status === 204) return null;
    return blob ? response.blob() : response.json();
  }
}

async function readDetail(response) {
  try {
    const body = await response.json();
    return body.detail ?? "";
  } catch {
    return "";
  }
}

// The names people know the request's fields by.
export function fieldLabel(field) {
  const names = {
    input_image: "The picture",
    input_image_2: "Reference picture 1",
    input_image_3: "Reference picture 2",
    input_image_4: "Reference picture 3",
    prompt: "The instruction",
    name: "The name",
  };
  return names[field] ?? `Setting "${field}"`;
}

async function errorFrom(response) {
  const status = response.status;
  const detail = await readDetail(response);
  if (status === 422 && Array.isArray(detail) && detail.length) {
    const field = detail[0].loc?.at(-1) ?? null;
    const lines = detail.map((d) => `${fieldLabel(d.loc?.at(-1) ?? "?")}: ${d.msg}`);
    return new ApiError(lines.join(" · "), { status, field: field === null ? null : String(field) });
  }
  const text = typeof detail === "string" ? detail : JSON.stringify(detail);
  if (status === 413) {
    return new ApiError(`That is too big for this server: ${text}`, { status, field: "input_image" });
  }
  if (status === 429) {
    const retryAfter = Number.parseInt(response.headers.get("retry-after") ?? "", 10);
    const wait = Number.isFinite(retryAfter) ? `about ${retryAfter} s` : "a little";
    return new ApiError(`The queue is full: wait ${wait}, then send again. (${text})`, {
      status,
      retryAfter: Number.isFinite(retryAfter) ? retryAfter : null,
    });
  }
  if (status === 503) {
    return new ApiError(`The model is still loading: try again in a moment. ${text}`.trim(), { status });
  }
  if (status === 404) {
    return new ApiError(`Not found: ${text}`, { status });
  }
  if (status === 409) {
    return new ApiError(`Not possible right now: ${text}`, { status });
  }
  return new ApiError(text ? `The server answered ${status}: ${text}` : `The server answered ${status}.`, {
    status,
  });
}

// The routes of docs/web.md.
const s = (id) => `v1/sessions/${encodeURIComponent(id)}`;
export const api = {
  info: () => request("GET", "v1/info"),
  listSessions: () => request("GET", "v1/sessions"),
  createSession: (fields) => request("POST", "v1/sessions", { body: fields }),
  getSession: (id) => request("GET", s(id)),
  renameSession: (id, name) => request("PATCH", s(id), { body: { name } }),
  deleteSession: (id) => request("DELETE", s(id)),
  addTurns: (id, fields) => request("POST", `${s(id)}/turns`, { body: fields }),
  setHead: (id, turn) => request("POST", `${s(id)}/head`, { body: { turn } }),
  cancelTurn: (id, n) => request("POST", `${s(id)}/turns/${n}/cancel`),
  zip: (id) => request("GET", `${s(id)}/zip`, { blob: true }),
};

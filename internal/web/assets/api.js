// api.js — the daemon's /v1 API, called with the token /login kept in this
// origin's localStorage, as an Authorization header (no cookie: cookies
// reach every port of the host). Errors are the daemon's own: kind,
// message, fix and the fix's action (see fix.js).

const TOKEN_KEY = 'banger.token';

export const loggedOutError = () => new ApiError('Unauthenticated', 'not logged in to this banger UI',
  'run `banger web url` on the daemon\'s host and open the URL it prints', 401);

// headers are the API version and the token; without a token it throws.
function headers() {
  const token = localStorage.getItem(TOKEN_KEY);
  if (!token) throw loggedOutError();
  return { 'X-Banger-API': '1.1', Authorization: `Bearer ${token}` };
}

export const loggedIn = () => !!localStorage.getItem(TOKEN_KEY);

export class ApiError extends Error {
  constructor(kind, message, fix, status, action) {
    super(message);
    this.kind = kind;
    this.fix = fix || '';
    this.action = action || null;
    this.status = status;
  }
}

export async function call(method, path, body, signal) {
  const opts = { method, headers: headers(), credentials: 'omit', signal };
  if (body !== undefined) {
    opts.headers['Content-Type'] = 'application/json';
    opts.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(path, opts);
  } catch (err) {
    if (err.name === 'AbortError') throw err;
    throw new ApiError('Unavailable', 'cannot reach bangerd: ' + err.message, 'check that bangerd is running on the host', 0);
  }
  const text = await res.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = null; }
  if (!res.ok) {
    throw new ApiError(data?.kind ?? 'Internal', data?.message ?? `${res.status} ${res.statusText}`, data?.fix ?? '', res.status, data?.action);
  }
  return { data, headers: res.headers };
}

export const get = (path, signal) => call('GET', path, undefined, signal).then(r => r.data);

// follow long-polls an operation (GET /v1/operations/{id}?wait=) and calls
// onChange with every new snapshot until it finishes; it returns the last.
export async function follow(op, onChange, signal) {
  let version = 0;
  onChange(op);
  for (;;) {
    const { data, headers } = await call('GET', `/v1/operations/${encodeURIComponent(op.id)}?wait=30s&version=${version}`, undefined, signal);
    version = Number(headers.get('X-Banger-Op-Version')) || version;
    onChange(data);
    if (data.state !== 'running') return data;
  }
}

// output fetches an operation's output lines from index `from`.
export const output = (id, from, signal) =>
  get(`/v1/operations/${encodeURIComponent(id)}/output?from=${from}`, signal);

// streamText reads a streaming text response (the serial log with
// follow=1) and hands each chunk to onChunk until the signal aborts.
export async function streamText(path, onChunk, signal) {
  const res = await fetch(path, { headers: headers(), credentials: 'omit', signal });
  if (!res.ok) {
    let data = null;
    try { data = await res.json(); } catch { /* not JSON */ }
    throw new ApiError(data?.kind ?? 'Internal', data?.message ?? res.statusText, data?.fix ?? '', res.status, data?.action);
  }
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    onChunk(value);
  }
}

// ticket gets a single-use ticket for the URL of an EventSource or a
// WebSocket, which cannot carry the Authorization header.
export const ticket = () => call('POST', '/v1/tickets').then(r => r.data.ticket);

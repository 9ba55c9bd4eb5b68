// events.js — the live state: one EventSource on /v1/events (server-sent
// events; the daemon publishes VM, image and operation snapshots when they
// change, and stats samples of running VMs). No polling in the browser.

import { ticket } from './api.js';

const MAX_SAMPLES = 60;

export const state = {
  vms: null,        // []VM, null until the first event
  images: null,     // []Image
  operations: null, // []Operation
  snapshots: null,  // []Snapshot
  stats: new Map(), // VM name → [VMStats…], newest last
  connected: false,
};

const listeners = new Set();

export function onChange(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function emit(what) {
  for (const fn of listeners) {
    try { fn(what); } catch (err) { console.error(err); }
  }
}

// connect opens the stream with a fresh ticket (EventSource cannot send
// the token header), and on any error closes it and reconnects with a new
// ticket after a pause; a refused ticket request means logged out.
export function connect(statusEl) {
  const setStatus = (ok, text) => {
    state.connected = ok;
    statusEl.textContent = text;
    statusEl.classList.toggle('ok', ok);
    statusEl.classList.toggle('bad', !ok);
  };
  const open = async () => {
    let t;
    try {
      t = await ticket();
    } catch (err) {
      if (err.status === 401) { setStatus(false, 'logged out (run banger web url)'); return; }
      setStatus(false, 'reconnecting…');
      setTimeout(open, 2000);
      return;
    }
    const es = new EventSource(`/v1/events?ticket=${encodeURIComponent(t)}`);
    listen(es);
    es.onopen = () => setStatus(true, 'live');
    es.onerror = () => { es.close(); setStatus(false, 'reconnecting…'); setTimeout(open, 2000); };
  };
  open();
}

function listen(es) {
  for (const kind of ['vms', 'images', 'operations', 'snapshots']) {
    es.addEventListener(kind, ev => {
      state[kind] = JSON.parse(ev.data) ?? [];
      if (kind === 'vms') {
        const names = new Set(state.vms.map(v => v.name));
        for (const n of state.stats.keys()) if (!names.has(n)) state.stats.delete(n);
      }
      emit(kind);
    });
  }
  es.addEventListener('stats', ev => {
    const s = JSON.parse(ev.data);
    const list = state.stats.get(s.name) ?? [];
    const prev = list[list.length - 1];
    if (prev && prev.sampled_at === s.sampled_at) return;
    list.push(s);
    if (list.length > MAX_SAMPLES) list.shift();
    state.stats.set(s.name, list);
    emit('stats');
  });
  return es;
}

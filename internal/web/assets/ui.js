// ui.js — small DOM helpers shared by the pages: element building,
// formatting, the error box, the live stage list and sparklines.

import { call } from './api.js';
import { buttonAction, fixText } from './fix.js';

export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs ?? {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'html') el.innerHTML = v;
    else el.setAttribute(k, v === true ? '' : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
export function bytes(n) {
  if (!n) return '0 B';
  let i = 0;
  while (n >= 1024 && i < UNITS.length - 1) { n /= 1024; i++; }
  return `${n >= 100 || i === 0 ? n.toFixed(0) : n.toFixed(1)} ${UNITS[i]}`;
}

export function duration(ms) {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  if (ms < 60000) return `${(ms / 1000).toFixed(1)} s`;
  return `${Math.floor(ms / 60000)} m ${Math.round((ms % 60000) / 1000)} s`;
}

export function ago(iso) {
  const ms = Date.now() - new Date(iso).getTime();
  if (ms < 60000) return 'just now';
  if (ms < 3600000) return `${Math.floor(ms / 60000)} min ago`;
  if (ms < 86400000) return `${Math.floor(ms / 3600000)} h ago`;
  return new Date(iso).toLocaleDateString();
}

export function badge(text, kind = text) {
  return h('span', { class: `badge badge-${kind}` }, text);
}

// errorBox shows an API error in the daemon's words: message, then fix —
// its action in words, never a command line, and a button when this UI can
// do it (fix.js).
export function errorBox(err) {
  const fix = fixText(err);
  return h('div', { class: 'error', role: 'alert' },
    h('strong', {}, err.message || String(err)),
    fix ? h('p', { class: 'fix' }, 'Fix: ', h('span', {}, fix), ' ', actionButton(err.action)) : null);
}

// actionButton performs a fix action the UI can do itself (null otherwise).
function actionButton(action) {
  const a = buttonAction(action);
  if (!a) return null;
  const btn = h('button', {
    type: 'button',
    onclick: async () => {
      btn.disabled = true;
      try {
        await call(a.method, a.path);
        btn.textContent = 'Requested';
      } catch (e) {
        btn.replaceWith(h('span', {}, e.message));
      }
    },
  }, a.label);
  return btn;
}

// showError replaces the contents of el with an error box (or clears it).
export function showError(el, err) {
  el.replaceChildren(err ? errorBox(err) : '');
}

const ICON = { running: '◌', ok: '✓', failed: '✕', skipped: '–' };

// stageList renders an operation's stages with live durations.
export function stageList(op) {
  const now = Date.now();
  return h('ol', { class: 'stages' }, op.stages.map(s => {
    const ms = s.outcome === 'running' ? now - new Date(s.started).getTime() : s.duration_ns / 1e6;
    return h('li', { class: `stage stage-${s.outcome}`, 'data-stage': s.name },
      h('span', { class: 'stage-icon', 'aria-hidden': 'true' }, ICON[s.outcome] ?? '•'),
      h('span', { class: 'stage-name' }, s.name, s.detail ? h('span', { class: 'stage-detail' }, ` — ${s.detail}`) : null),
      h('span', { class: 'stage-time' }, duration(ms)),
      h('span', { class: 'sr-only' }, ` ${s.outcome}`));
  }));
}

// opPanel follows an operation into el: title, stages (refreshed every
// 200 ms while one runs, for the clock), and the outcome.
export function opPanel(el, title) {
  let op = null;
  let timer = null;
  const stagesEl = h('div', {});
  const statusEl = h('p', { class: 'op-status', 'aria-live': 'polite' }, 'starting…');
  const extra = h('div', {});
  el.replaceChildren(h('div', { class: 'op' }, h('h3', {}, title), stagesEl, statusEl, extra));
  const draw = () => {
    if (!op) return;
    stagesEl.replaceChildren(stageList(op));
    const total = (op.finished ? new Date(op.finished) : new Date()) - new Date(op.started);
    if (op.state === 'running') {
      const cur = op.stages.findLast(s => s.outcome === 'running');
      statusEl.textContent = `${cur ? cur.name + '…' : 'working…'} (${duration(total)})`;
    } else if (op.state === 'succeeded') {
      statusEl.textContent = `Done in ${duration(total)}.`;
      statusEl.className = 'op-status ok';
    } else {
      statusEl.textContent = `Failed after ${duration(total)}.`;
      statusEl.className = 'op-status bad';
    }
  };
  return {
    update(next) {
      op = next;
      draw();
      if (op.state === 'running' && !timer) timer = setInterval(draw, 200);
      if (op.state !== 'running' && timer) { clearInterval(timer); timer = null; }
    },
    fail(err) {
      if (timer) { clearInterval(timer); timer = null; }
      extra.replaceChildren(errorBox(err));
      if (!op) statusEl.textContent = 'Not started.';
    },
    extra,
    stop() { if (timer) clearInterval(timer); timer = null; },
  };
}

// sparkline draws values as an inline SVG line with a soft fill.
export function sparkline(values, { width = 140, height = 32, label = '', max } = {}) {
  const ns = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(ns, 'svg');
  svg.setAttribute('viewBox', `0 0 ${width} ${height}`);
  svg.setAttribute('width', width);
  svg.setAttribute('height', height);
  svg.setAttribute('class', 'spark');
  svg.setAttribute('role', 'img');
  svg.setAttribute('aria-label', label);
  if (values.length < 2) {
    const t = document.createElementNS(ns, 'line');
    Object.entries({ x1: 0, x2: width, y1: height - 1, y2: height - 1, class: 'spark-base' }).forEach(([k, v]) => t.setAttribute(k, v));
    svg.append(t);
    return svg;
  }
  const top = Math.max(max ?? 0, ...values) || 1;
  const step = width / (values.length - 1);
  const pts = values.map((v, i) => [i * step, height - 2 - (v / top) * (height - 4)]);
  const line = pts.map(([x, y], i) => `${i ? 'L' : 'M'}${x.toFixed(1)},${y.toFixed(1)}`).join('');
  const area = document.createElementNS(ns, 'path');
  area.setAttribute('d', `${line}L${width},${height}L0,${height}Z`);
  area.setAttribute('class', 'spark-area');
  const path = document.createElementNS(ns, 'path');
  path.setAttribute('d', line);
  path.setAttribute('class', 'spark-line');
  svg.append(area, path);
  return svg;
}

// confirmButton is a button that asks again in place before acting.
export function confirmButton(label, confirmLabel, action, attrs = {}) {
  const wrap = h('span', { class: 'confirm' });
  const ask = () => {
    const yes = h('button', { type: 'button', class: 'btn danger small', onclick: () => { reset(); action(); } }, confirmLabel);
    const no = h('button', { type: 'button', class: 'btn ghost small', onclick: () => { reset(); first.focus(); } }, 'Cancel');
    wrap.replaceChildren(yes, no);
    yes.focus();
  };
  const first = h('button', { type: 'button', class: 'btn ghost small danger-text', onclick: ask, ...attrs }, label);
  const reset = () => wrap.replaceChildren(first);
  reset();
  return wrap;
}

// keepFocus re-renders with fn while keeping keyboard focus on the element
// with the same data-key.
export function keepFocus(fn) {
  const key = document.activeElement?.dataset?.key;
  fn();
  if (key) document.querySelector(`[data-key="${CSS.escape(key)}"]`)?.focus();
}

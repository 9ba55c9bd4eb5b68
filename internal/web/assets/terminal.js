// terminal.js — a shell in the guest: xterm.js over the terminal
// WebSocket (binary messages carry keystrokes and output; JSON text
// messages carry resizes, the exit code and errors).

import { Terminal } from './vendor/xterm.mjs';
import { FitAddon } from './vendor/addon-fit.mjs';
import { h, badge, errorBox } from './ui.js';
import { state, onChange } from './events.js';
import { ticket } from './api.js';

const enc = encodeURIComponent;

export function terminalPage(main, name) {
  const status = h('span', { class: 'term-status', role: 'status', 'aria-live': 'polite' }, 'connecting…');
  const errEl = h('div', {});
  const box = h('div', { class: 'term', id: 'terminal' });
  const stateBadge = h('span', {});
  const reconnect = h('button', { type: 'button', class: 'btn small', hidden: true, onclick: () => open() }, 'Reconnect');
  main.replaceChildren(
    h('div', { class: 'page-head' },
      h('div', { class: 'title-row' }, h('h1', {}, 'Terminal: ', h('a', { href: `#/vms/${enc(name)}` }, name)), stateBadge),
      h('div', { class: 'actions' }, status, reconnect, h('a', { class: 'btn ghost small', href: `#/vms/${enc(name)}` }, 'Close'))),
    errEl,
    h('section', { class: 'card term-card', 'aria-label': `Shell in ${name}` }, box),
    h('p', { class: 'hint' }, 'A login shell in the guest over the agent. Press Tab to reach the terminal; ',
      h('kbd', {}, 'Ctrl'), '+', h('kbd', {}, 'D'), ' ends the shell.'));

  const drawState = () => {
    const vm = (state.vms ?? []).find(v => v.name === name);
    stateBadge.replaceChildren(vm ? badge(vm.runtime.state) : '');
  };
  drawState();
  const off = onChange(w => { if (w === 'vms') drawState(); });

  const term = new Terminal({
    cursorBlink: true, fontSize: 14, scrollback: 5000, convertEol: false,
    fontFamily: '"DejaVu Sans Mono", "Liberation Mono", ui-monospace, monospace',
    theme: { background: '#0b1016', foreground: '#dbe3ec', cursor: '#36c2b4', selectionBackground: '#2c4a5c' },
  });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(box);
  fit.fit();
  window.bangerTerm = term; // for the browser tests and the curious
  const encoder = new TextEncoder();
  let ws = null;

  // open connects with a fresh single-use ticket (a WebSocket cannot send
  // the token header).
  async function open() {
    errEl.replaceChildren();
    reconnect.hidden = true;
    let t;
    try {
      t = await ticket();
    } catch (err) {
      errEl.replaceChildren(errorBox(err));
      reconnect.hidden = false;
      return;
    }
    const proto = location.protocol === 'https:' ? 'wss' : 'ws';
    ws = new WebSocket(`${proto}://${location.host}/v1/vms/${enc(name)}/terminal?rows=${term.rows}&cols=${term.cols}&ticket=${enc(t)}`);
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => { status.textContent = 'connected'; status.className = 'term-status ok'; term.focus(); };
    ws.onmessage = ev => {
      if (ev.data instanceof ArrayBuffer) { term.write(new Uint8Array(ev.data)); return; }
      const m = JSON.parse(ev.data);
      if (m.type === 'exit') term.write(`\r\n\x1b[2m[shell exited with code ${m.code}]\x1b[0m\r\n`);
      if (m.type === 'error') errEl.replaceChildren(errorBox(m));
    };
    ws.onclose = () => { status.textContent = 'disconnected'; status.className = 'term-status bad'; reconnect.hidden = false; };
  }
  term.onData(d => { if (ws?.readyState === WebSocket.OPEN) ws.send(encoder.encode(d)); });
  term.onResize(({ rows, cols }) => {
    if (ws?.readyState === WebSocket.OPEN) ws.send(JSON.stringify({ type: 'resize', rows, cols }));
  });
  const onWinResize = () => fit.fit();
  window.addEventListener('resize', onWinResize);
  open();
  return () => {
    off();
    window.removeEventListener('resize', onWinResize);
    ws?.close();
    term.dispose();
    if (window.bangerTerm === term) delete window.bangerTerm;
  };
}

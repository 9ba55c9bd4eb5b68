// host.js — the Host page: the daemon's status, the doctor's checks and
// recent operations (live).

import { get } from './api.js';
import { state, onChange } from './events.js';
import { h, badge, errorBox, duration, ago, stageList } from './ui.js';

export function hostPage(main) {
  const statusEl = h('dl', { class: 'facts' }, h('dt', {}, 'Loading…'));
  const checksEl = h('div', { 'aria-live': 'polite' }, h('p', { class: 'muted' }, 'Running the doctor…'));
  const opsEl = h('div', {});
  const rerun = h('button', { type: 'button', class: 'btn ghost small', onclick: () => doctor() }, 'Run again');
  main.replaceChildren(
    h('div', { class: 'page-head' }, h('h1', {}, 'Host'), h('p', { class: 'sub' }, 'What bangerd found on this machine')),
    h('div', { class: 'grid2' },
      h('section', { class: 'card', 'aria-labelledby': 'daemon-h' }, h('h2', { id: 'daemon-h' }, 'Daemon'), statusEl),
      h('section', { class: 'card', 'aria-labelledby': 'ops-h' }, h('h2', { id: 'ops-h' }, 'Recent operations'), opsEl)),
    h('section', { class: 'card', 'aria-labelledby': 'doc-h' }, h('div', { class: 'card-head' }, h('h2', { id: 'doc-h' }, 'Doctor'), rerun), checksEl));

  get('/v1/status').then(st => {
    const f = (k, v) => [h('dt', {}, k), h('dd', {}, v)];
    statusEl.replaceChildren(...f('Version', st.version), ...f('Engine', `${st.engine} / ${st.accel}`), ...f('Disk driver', st.disk_driver),
      ...f('VMs', `${st.running} running of ${st.vms}`), ...f('Images', String(st.images)),
      ...f('State dir', h('code', {}, st.state_dir)), ...f('Socket', h('code', {}, st.socket_path)), ...f('Started', new Date(st.started_at).toLocaleString()));
  }).catch(err => statusEl.replaceChildren(errorBox(err)));

  async function doctor() {
    rerun.disabled = true;
    try {
      const rep = await get('/v1/doctor');
      const counts = { ok: 0, warn: 0, fail: 0 };
      rep.checks.forEach(c => counts[c.status]++);
      checksEl.replaceChildren(
        h('p', { class: 'sub' }, `${counts.ok} ok · ${counts.warn} warnings · ${counts.fail} failures`),
        h('table', { class: 'table checks' },
          h('thead', {}, h('tr', {}, ['Status', 'Check', 'Detail'].map(c => h('th', { scope: 'col' }, c)))),
          h('tbody', {}, rep.checks.map(c => h('tr', { class: `check-${c.status}` },
            h('td', {}, badge(c.status)), h('th', { scope: 'row' }, c.name),
            h('td', {}, c.detail, c.fix ? h('div', { class: 'fix' }, 'Fix: ', c.fix) : null))))));
    } catch (err) {
      checksEl.replaceChildren(errorBox(err));
    } finally {
      rerun.disabled = false;
    }
  }
  doctor();

  const drawOps = () => {
    const ops = [...(state.operations ?? [])].sort((a, b) => new Date(b.started) - new Date(a.started)).slice(0, 8);
    if (!ops.length) { opsEl.replaceChildren(h('p', { class: 'muted' }, state.operations ? 'None since the daemon started.' : 'Loading…')); return; }
    opsEl.replaceChildren(h('ul', { class: 'ops' }, ops.map(op => {
      const end = op.finished ? new Date(op.finished) : new Date();
      return h('li', {}, h('details', {},
        h('summary', {}, badge(op.state), ' ', h('strong', {}, op.kind), ' ', op.target, ' ',
          h('span', { class: 'muted small' }, `${duration(end - new Date(op.started))} · ${ago(op.started)}`)),
        stageList(op), op.error ? errorBox(op.error) : null));
    })));
  };
  drawOps();
  const off = onChange(w => { if (w === 'operations') drawOps(); });
  return () => off();
}

// vms.js — the VMs page (live list, create form with live stages) and a
// VM's own page (details, snapshot and fork, stats charts, serial console).

import { call, follow, get, streamText } from './api.js';
import { state, onChange } from './events.js';
import { policyCard } from './netpolicy.js';
import { forkControls, snapshotVM } from './snapshots.js';
import { h, bytes, duration, badge, errorBox, showError, opPanel, sparkline, confirmButton, keepFocus } from './ui.js';

const enc = encodeURIComponent;

// lifetimeText says what the daemon will do to a VM on its own: its TTL
// with the time left, its idle-stop, and whether a vm run owns it.
export function lifetimeText(lt, now = Date.now()) {
  if (!lt) return '';
  const parts = [];
  if (lt.expires_at) {
    const left = Date.parse(lt.expires_at) - now;
    parts.push(`${lt.ttl_action || 'delete'} ${left > 0 ? 'in ' + duration(left) : 'now'}`);
  }
  if (lt.idle_stop_ns) parts.push(`stop after ${duration(lt.idle_stop_ns / 1e6)} idle`);
  if (lt.run) parts.push('deleted when its vm run ends');
  return parts.join(' · ');
}

// forwardLinks lists daemon-held port forwards as links (http URLs only).
function forwardLinks(fwds) {
  if (!fwds || fwds.length === 0) return '';
  return h('ul', { class: 'plain' }, ...fwds.map(f => h('li', {},
    /^http:\/\/[^/]+$/.test(f.url)
      ? h('a', { href: f.url, target: '_blank', rel: 'noopener noreferrer' }, f.url)
      : h('code', {}, f.url),
    ` → guest port ${f.guest_port}`)));
}

// vmAction starts/stops/deletes a VM and follows the operation; errors go
// to errEl in the daemon's words.
async function vmAction(name, action, errEl) {
  showError(errEl, null);
  try {
    const path = action === 'delete' ? `/v1/vms/${enc(name)}` : `/v1/vms/${enc(name)}/${action}`;
    const { data: op } = await call(action === 'delete' ? 'DELETE' : 'POST', path);
    const final = await follow(op, () => {});
    if (final.state === 'failed') showError(errEl, final.error);
  } catch (err) {
    showError(errEl, err);
  }
}

function actions(vm, errEl, { withOpen = false } = {}) {
  const st = vm.runtime.state;
  const busy = ['creating', 'starting', 'stopping', 'deleting'].includes(st);
  const key = a => `${a}:${vm.name}`;
  return h('div', { class: 'actions' },
    withOpen ? h('a', { class: 'btn ghost small', href: `#/vms/${enc(vm.name)}`, 'data-key': key('open') }, 'Open') : null,
    st === 'running'
      ? h('a', { class: 'btn small', href: `#/vms/${enc(vm.name)}/terminal`, 'data-key': key('term'), 'aria-label': `Terminal to ${vm.name}` }, 'Terminal')
      : null,
    st === 'running'
      ? h('button', { type: 'button', class: 'btn ghost small', 'data-key': key('stop'), onclick: () => vmAction(vm.name, 'stop', errEl), 'aria-label': `Stop ${vm.name}` }, 'Stop')
      : h('button', { type: 'button', class: 'btn ghost small', disabled: busy, 'data-key': key('start'), onclick: () => vmAction(vm.name, 'start', errEl), 'aria-label': `Start ${vm.name}` }, 'Start'),
    confirmButton('Delete', `Delete ${vm.name}`, () => vmAction(vm.name, 'delete', errEl), { disabled: st === 'deleting', 'data-key': key('delete'), 'aria-label': `Delete ${vm.name}` }));
}

function cpuSpark(name) {
  const samples = state.stats.get(name) ?? [];
  const vals = samples.map(s => s.cpu_percent);
  const last = vals.length ? vals[vals.length - 1] : null;
  return h('span', { class: 'spark-cell' },
    sparkline(vals, { width: 96, height: 24, max: 100, label: last === null ? 'no samples yet' : `CPU ${last.toFixed(0)}%` }),
    h('span', { class: 'spark-val' }, last === null ? '—' : `${last.toFixed(0)}%`));
}

function vmRows(errEl) {
  if (state.vms === null) return [h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'Loading…'))];
  if (state.vms.length === 0) return [h('tr', {}, h('td', { colspan: 7, class: 'empty' }, 'No VMs yet. Create one with the form.'))];
  return state.vms.map(vm => h('tr', { 'data-vm': vm.name, 'data-state': vm.runtime.state },
    h('th', { scope: 'row' }, h('a', { href: `#/vms/${enc(vm.name)}`, 'data-key': `name:${vm.name}` }, vm.name)),
    h('td', {}, badge(vm.runtime.state), vm.runtime.last_error ? h('div', { class: 'small bad' }, vm.runtime.last_error) : null,
      vm.lifetime ? h('div', { class: 'small muted', 'data-lifetime': '' }, lifetimeText(vm.lifetime)) : null),
    h('td', {}, vm.image_name),
    h('td', { class: 'num' }, `${vm.vcpus} vCPU · ${vm.memory_mib} MiB · ${bytes(vm.disk_bytes)}`),
    h('td', { class: 'nowrap' }, vm.runtime.guest_ip ? h('span', {}, h('code', {}, vm.runtime.guest_ip), h('div', { class: 'small muted' }, vm.runtime.dns_name)) : '—'),
    h('td', {}, vm.runtime.state === 'running' ? cpuSpark(vm.name) : h('span', { class: 'muted' }, '—')),
    h('td', {}, actions(vm, errEl))));
}

function imageOptions(select) {
  const cur = select.value;
  const imgs = state.images ?? [];
  select.replaceChildren(h('option', { value: '' }, 'default image'), ...imgs.map(i => h('option', { value: i.name }, i.name)));
  if (imgs.some(i => i.name === cur)) select.value = cur;
}

function createForm() {
  const progress = h('div', { id: 'create-progress', class: 'progress-area' });
  const img = h('select', { id: 'vm-image', name: 'image' });
  imageOptions(img);
  const form = h('form', { id: 'create-vm', class: 'form', 'aria-labelledby': 'create-h' },
    h('h2', { id: 'create-h' }, 'New VM'),
    h('label', { for: 'vm-image' }, 'Image'), img,
    h('label', { for: 'vm-name' }, 'Name ', h('span', { class: 'hint' }, '(empty: generated)')),
    h('input', { id: 'vm-name', name: 'name', autocomplete: 'off', spellcheck: 'false', placeholder: 'e.g. scratch', pattern: '[a-z0-9][a-z0-9-]{0,62}' }),
    h('div', { class: 'row3' },
      h('div', {}, h('label', { for: 'vm-vcpus' }, 'vCPUs'), h('input', { id: 'vm-vcpus', name: 'vcpus', type: 'number', min: 1, max: 32, placeholder: 'default' })),
      h('div', {}, h('label', { for: 'vm-memory' }, 'RAM (MiB)'), h('input', { id: 'vm-memory', name: 'memory', type: 'number', min: 128, step: 128, placeholder: 'default' })),
      h('div', {}, h('label', { for: 'vm-disk' }, 'Disk (GiB)'), h('input', { id: 'vm-disk', name: 'disk', type: 'number', min: 1, step: 1, placeholder: 'default' }))),
    h('div', { class: 'row3' },
      h('div', {}, h('label', { for: 'vm-ttl' }, 'TTL (min)'), h('input', { id: 'vm-ttl', name: 'ttl', type: 'number', min: 1, step: 1, placeholder: 'none' })),
      h('div', {}, h('label', { for: 'vm-ttl-action' }, 'At TTL'), h('select', { id: 'vm-ttl-action', name: 'ttl_action' },
        h('option', { value: 'delete' }, 'delete'), h('option', { value: 'stop' }, 'stop'))),
      h('div', {}, h('label', { for: 'vm-idle' }, 'Idle-stop (min)'), h('input', { id: 'vm-idle', name: 'idle', type: 'number', min: 1, step: 1, placeholder: 'never' }))),
    h('button', { type: 'submit', class: 'btn primary', id: 'create-submit' }, 'Create VM'),
    progress);
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    const fd = new FormData(form);
    const req = {};
    if (fd.get('name')) req.name = fd.get('name').trim();
    if (fd.get('image')) req.image = fd.get('image');
    if (fd.get('vcpus')) req.vcpus = Number(fd.get('vcpus'));
    if (fd.get('memory')) req.memory_mib = Number(fd.get('memory'));
    if (fd.get('disk')) req.disk_bytes = Math.round(Number(fd.get('disk')) * 1024 ** 3);
    if (fd.get('ttl')) { req.ttl_seconds = Math.round(Number(fd.get('ttl')) * 60); req.ttl_action = fd.get('ttl_action'); }
    if (fd.get('idle')) req.idle_stop_seconds = Math.round(Number(fd.get('idle')) * 60);
    const submit = form.querySelector('#create-submit');
    submit.disabled = true;
    const panel = opPanel(progress, `Creating ${req.name || 'a VM'}`);
    progress.scrollIntoView({ block: 'nearest' });
    try {
      const { data: op } = await call('POST', '/v1/vms', req);
      const final = await follow(op, o => panel.update(o));
      if (final.state === 'failed') panel.fail(final.error);
      else {
        const vm = final.result ?? {};
        panel.extra.replaceChildren(h('p', { class: 'ready' }, h('strong', {}, vm.name ?? op.target), ' is ready. ',
          h('a', { href: `#/vms/${enc(vm.name ?? op.target)}/terminal` }, 'Open a terminal'), ' · ',
          h('a', { href: `#/vms/${enc(vm.name ?? op.target)}` }, 'Details')));
        form.querySelector('#vm-name').value = '';
      }
    } catch (err) {
      panel.fail(err);
    } finally {
      panel.stop();
      submit.disabled = false;
    }
  });
  return { form, img };
}

export function vmsPage(main) {
  const errEl = h('div', { class: 'alerts', 'aria-live': 'assertive' });
  const tbody = h('tbody', {});
  const summary = h('p', { class: 'sub' });
  const { form, img } = createForm();
  const draw = () => keepFocus(() => {
    tbody.replaceChildren(...vmRows(errEl));
    const vms = state.vms ?? [];
    summary.textContent = `${vms.filter(v => v.runtime.state === 'running').length} running · ${vms.length} total`;
  });
  main.replaceChildren(
    h('div', { class: 'page-head' }, h('h1', {}, 'Virtual machines'), summary),
    h('div', { class: 'cols' },
      h('section', { class: 'card grow', 'aria-labelledby': 'list-h' },
        h('h2', { id: 'list-h', class: 'sr-only' }, 'VM list'), errEl,
        h('div', { class: 'table-wrap' }, h('table', { class: 'table', id: 'vm-table' },
          h('thead', {}, h('tr', {}, ['Name', 'State', 'Image', 'Resources', 'Address', 'CPU', h('span', { class: 'sr-only' }, 'Actions')].map(c => h('th', { scope: 'col' }, c)))),
          tbody))),
      h('aside', { class: 'card side' }, form)));
  draw();
  const off = onChange(what => {
    if (what === 'vms' || what === 'stats') draw();
    if (what === 'images') imageOptions(img);
  });
  return () => off();
}

function statCharts(name) {
  const samples = state.stats.get(name) ?? [];
  const rate = key => samples.slice(1).map((s, i) => {
    const dt = (new Date(s.sampled_at) - new Date(samples[i].sampled_at)) / 1000 || 1;
    return Math.max(0, (s[key] - samples[i][key]) / dt);
  });
  const last = a => (a.length ? a[a.length - 1] : 0);
  const cpu = samples.map(s => s.cpu_percent);
  const rss = samples.map(s => s.rss_bytes);
  const rx = rate('net_rx_bytes'), tx = rate('net_tx_bytes');
  const rd = rate('disk_read_bytes'), wr = rate('disk_write_bytes');
  const chart = (title, vals, text, opts = {}) => h('figure', { class: 'chart' },
    h('figcaption', {}, h('span', {}, title), h('strong', {}, text)),
    sparkline(vals, { width: 220, height: 44, label: `${title}: ${text}`, ...opts }));
  return h('div', { class: 'charts' },
    chart('CPU', cpu, `${last(cpu).toFixed(1)} %`, { max: 100 }),
    chart('Memory (RSS)', rss, bytes(last(rss))),
    chart('Network in', rx, `${bytes(last(rx))}/s`), chart('Network out', tx, `${bytes(last(tx))}/s`),
    chart('Disk read', rd, `${bytes(last(rd))}/s`), chart('Disk write', wr, `${bytes(last(wr))}/s`));
}

// cleanTerm drops terminal escape sequences and control characters from
// serial console text (kept: newlines and tabs).
function cleanTerm(s) {
  return s.replace(/\x1b\[[0-?]*[ -\/]*[@-~]/g, '').replace(/\x1b[\]P^_][^\x07\x1b]*(\x07|\x1b\\)?/g, '')
    .replace(/\x1b./g, '').replace(/\r+\n/g, '\n').replace(/\r/g, '').replace(/[\x00-\x08\x0b-\x1f\x7f]/g, '');
}

// forkPanel is a running VM's "Snapshot and fork" card: Fork N children
// (the VM is snapshotted first, that snapshot kept) or just snapshot it.
function forkPanel(name) {
  const progress = h('div', { class: 'progress-area', id: 'fork-progress' });
  const snapBtn = h('button', { type: 'button', class: 'btn ghost small', 'data-key': 'snapshot' }, 'Snapshot');
  snapBtn.onclick = () => snapshotVM(progress, name, '', false, snapBtn);
  const card = h('section', { class: 'card', 'aria-labelledby': 'fork-h', hidden: true },
    h('h2', { id: 'fork-h' }, 'Snapshot and fork ',
      h('span', { class: 'hint' }, 'new VMs that resume from this one\'s memory, with their own name, address and disks')),
    h('div', { class: 'actions' }, forkControls(name, progress), snapBtn), progress);
  return { card };
}

export function vmPage(main, name) {
  const ctl = new AbortController();
  const errEl = h('div', { class: 'alerts', 'aria-live': 'assertive' });
  const head = h('div', { class: 'page-head' });
  const info = h('dl', { class: 'facts' });
  const charts = h('div', {});
  const log = h('pre', { class: 'serial', tabindex: '0', 'aria-label': `Serial console of ${name}` });
  const diffOut = h('pre', { class: 'diff', tabindex: '0', 'aria-label': `Workspace diff of ${name}`, hidden: true });
  const diffErr = h('div', {});
  const diffBtn = h('button', { type: 'button', class: 'btn small', 'data-key': 'diff' }, 'Show diff');
  diffBtn.onclick = async () => {
    diffBtn.disabled = true;
    diffErr.replaceChildren();
    let text = '';
    try {
      // guest-written text: shown with textContent only, never as markup
      await streamText(`/v1/vms/${enc(name)}/diff`, chunk => { text += chunk; }, ctl.signal);
      diffOut.textContent = text ? cleanTerm(text) : 'No changes since the workspace was made.';
      diffOut.hidden = false;
    } catch (err) {
      if (err.name !== 'AbortError') diffErr.replaceChildren(errorBox(err));
    } finally {
      diffBtn.disabled = false;
    }
  };
  const logErr = h('div', {});
  const policy = policyCard(name, ctl.signal);
  const forkCard = forkPanel(name);
  main.replaceChildren(head, errEl, forkCard.card,
    h('div', { class: 'grid2' },
      h('section', { class: 'card', 'aria-labelledby': 'facts-h' }, h('h2', { id: 'facts-h' }, 'Details'), info),
      h('section', { class: 'card', 'aria-labelledby': 'stats-h' }, h('h2', { id: 'stats-h' }, 'Stats ', h('span', { class: 'hint' }, 'live')), charts)),
    policy.card,
    h('section', { class: 'card', 'aria-labelledby': 'diff-h' }, h('h2', { id: 'diff-h' }, 'Workspace diff ',
      h('span', { class: 'hint' }, `read-only: the changes in /root/work (vm create --workspace); apply them with banger vm diff ${name} --apply`)),
      diffBtn, diffErr, diffOut),
    h('section', { class: 'card', 'aria-labelledby': 'serial-h' }, h('h2', { id: 'serial-h' }, 'Serial console ', h('span', { class: 'hint' }, 'following')), logErr, log));
  // access: the VM's feature servers (opencode) with their per-VM
  // credentials (VMDetail.Access, in the detail read below).
  const accessFacts = () => (detail?.access ?? []).flatMap(a => [h('dt', {}, a.feature),
    h('dd', {}, a.warning ? h('span', { class: 'bad' }, a.warning)
      : [h('a', { href: a.url, target: '_blank', rel: 'noopener noreferrer' }, `Open ${a.feature}`),
        a.password ? h('span', { class: 'hint' }, ' user ', h('code', {}, a.user), ', password ', h('code', {}, a.password)) : '']
  )]);
  const draw = () => keepFocus(() => {
    const vm = (state.vms ?? []).find(v => v.name === name);
    if (!vm) {
      head.replaceChildren(h('h1', {}, name), state.vms ? h('p', { class: 'sub' }, 'This VM does not exist (any more). ', h('a', { href: '#/vms' }, 'Back to the list')) : '');
      return;
    }
    const r = vm.runtime;
    head.replaceChildren(h('div', { class: 'title-row' }, h('h1', {}, vm.name), badge(r.state)), actions(vm, errEl));
    forkCard.card.hidden = r.state !== 'running';
    const fact = (k, v) => [h('dt', {}, k), h('dd', {}, v || '—')];
    info.replaceChildren(...fact('Image', vm.image_name), ...fact('Resources', `${vm.vcpus} vCPU · ${vm.memory_mib} MiB · ${bytes(vm.disk_bytes)} disk`),
      ...fact('Address', r.guest_ip ? h('code', {}, r.guest_ip) : ''), ...fact('DNS name', r.dns_name ? h('code', {}, r.dns_name) : ''),
      ...fact('Engine', r.engine ? `${r.engine}${r.accel ? ' / ' + r.accel : ''}` : ''), ...fact('Disk driver', r.system_disk_kind),
      ...fact('Started', r.started_at ? new Date(r.started_at).toLocaleString() : ''), ...fact('Last error', r.last_error),
      ...fact('Lifetime', lifetimeText(vm.lifetime)),
      ...fact('Started from', vm.origin ? h('a', { href: '#/snapshots' }, vm.origin) : ''),
      ...fact('Idle-stop at', detail?.idle_stop_at ? new Date(detail.idle_stop_at).toLocaleString() + ' if it stays idle' : ''),
      ...fact('Port forwards', forwardLinks(detail?.forwards)),
      ...accessFacts());
    charts.replaceChildren(statCharts(name));
  });
  // The detail (forwards, idle-stop time) is not in the event stream: read
  // it now and every few seconds while the page is open.
  let detail = null;
  const readDetail = () => get(`/v1/vms/${enc(name)}`, ctl.signal).then(d => { detail = d; draw(); }).catch(() => {});
  readDetail();
  const timer = setInterval(readDetail, 5000);
  ctl.signal.addEventListener('abort', () => clearInterval(timer));
  draw();
  const off = onChange(what => {
    if (what === 'vms' || what === 'stats') draw();
    if (what === 'stats') policy.refresh();
  });
  let text = '';
  streamText(`/v1/vms/${enc(name)}/logs?follow=1`, chunk => {
    const stick = log.scrollTop + log.clientHeight >= log.scrollHeight - 20;
    text = (text + cleanTerm(chunk)).slice(-200000);
    log.textContent = text;
    if (stick) log.scrollTop = log.scrollHeight;
  }, ctl.signal).catch(err => { if (err.name !== 'AbortError') logErr.replaceChildren(errorBox(err)); });
  return () => { off(); ctl.abort(); };
}


// snapshots.js — the Snapshots page (list with sizes and children, delete,
// fork, snapshot a VM) and the fork/snapshot panels the VM and image pages
// share. Mirrors `banger snapshot …` and `banger vm fork`.

import { call, follow } from './api.js';
import { state, onChange } from './events.js';
import { h, bytes, ago, showError, opPanel, confirmButton, keepFocus } from './ui.js';

const enc = encodeURIComponent;

// MAX_FORK is api.MaxForkCount.
export const MAX_FORK = 64;

// runOp posts req to path, follows the operation into progress (stages as
// they happen) and hands the result to done(result, panel).
export async function runOp(progress, title, method, path, req, done, button) {
  if (button) button.disabled = true;
  const panel = opPanel(progress, title);
  try {
    const { data: op } = await call(method, path, req);
    const final = await follow(op, o => panel.update(o));
    if (final.state === 'failed') panel.fail(final.error);
    else if (done) done(final.result, panel);
  } catch (err) {
    panel.fail(err);
  } finally {
    panel.stop();
    if (button) button.disabled = false;
  }
}

// forkResult lists the new VMs with their addresses and links.
function forkResult(res, panel) {
  panel.extra.replaceChildren(h('div', { class: 'ready' },
    h('p', {}, `From snapshot ${res?.snapshot ?? ''}:`),
    h('ul', { class: 'fork-list' }, (res?.vms ?? []).map(vm => h('li', { 'data-child': vm.name },
      h('a', { href: `#/vms/${enc(vm.name)}` }, vm.name), ' ',
      vm.runtime?.guest_ip ? h('code', {}, vm.runtime.guest_ip) : h('span', { class: 'muted' }, 'no address yet'), ' · ',
      h('a', { href: `#/vms/${enc(vm.name)}/terminal` }, 'Terminal'))))));
}

// fork starts count VMs from source (a snapshot or a running VM).
export function fork(progress, source, count, name, button) {
  const req = { source, count };
  if (name) req.name = name;
  const title = count > 1 ? `Forking ${count} VMs from ${source}` : `Forking ${source}`;
  return runOp(progress, title, 'POST', '/v1/vms/fork', req, forkResult, button);
}

// counts keeps each source's fork count across redraws.
const counts = new Map();

// forkControls is a count box and a Fork button for source.
export function forkControls(source, progress, { label = 'Fork' } = {}) {
  const count = h('input', { type: 'number', min: 1, max: MAX_FORK, value: counts.get(source) ?? 1, class: 'count',
    'data-key': `forkn:${source}`, 'aria-label': `How many VMs to fork from ${source}` });
  count.oninput = () => counts.set(source, count.value);
  const btn = h('button', { type: 'button', class: 'btn small', 'data-key': `fork:${source}`, 'aria-label': `Fork ${source}` }, label);
  btn.onclick = () => {
    const n = Number(count.value);
    if (!Number.isInteger(n) || n < 1 || n > MAX_FORK) {
      progress.replaceChildren(h('div', { class: 'error', role: 'alert' }, `Fork 1 to ${MAX_FORK} VMs at a time (not ${count.value}).`));
      return;
    }
    fork(progress, source, n, '', btn);
  };
  return h('span', { class: 'fork-controls' }, count, btn);
}

// snapshotVM snapshots a running VM (it pauses for the save).
export function snapshotVM(progress, vm, name, stop, button) {
  const req = { vm };
  if (name) req.name = name;
  if (stop) req.stop = true;
  return runOp(progress, `Snapshotting ${vm}`, 'POST', '/v1/snapshots', req, (s, panel) => {
    panel.extra.replaceChildren(h('p', { class: 'ready' }, 'Saved as ', h('strong', {}, s?.name ?? ''), ' (',
      bytes(s?.size_bytes ?? 0), '). ', h('a', { href: '#/snapshots' }, 'Snapshots')));
  }, button);
}

async function deleteSnapshot(name, errEl) {
  showError(errEl, null);
  try {
    await call('DELETE', `/v1/snapshots/${enc(name)}`);
    state.snapshots = (state.snapshots ?? []).filter(s => s.name !== name);
  } catch (err) {
    showError(errEl, err);
  }
}

function rows(errEl, progress) {
  const cols = 9;
  if (state.snapshots === null) return [h('tr', {}, h('td', { colspan: cols, class: 'muted' }, 'Loading…'))];
  if (!state.snapshots.length) {
    return [h('tr', {}, h('td', { colspan: cols, class: 'empty' }, 'No snapshots yet. Snapshot a running VM below, or warm an image on the Images page.'))];
  }
  return state.snapshots.map(s => h('tr', { 'data-snapshot': s.name },
    h('th', { scope: 'row' }, s.name),
    h('td', {}, s.kind === 'warm' ? h('span', { class: 'tag' }, 'warm') : 'vm'),
    h('td', {}, s.vm_name ? h('a', { href: `#/vms/${enc(s.vm_name)}` }, s.vm_name) : h('span', { class: 'muted' }, '—'),
      h('div', { class: 'small muted' }, s.image_name)),
    h('td', {}, s.engine, s.accel ? h('div', { class: 'small muted' }, s.accel) : null),
    h('td', { class: 'num' }, `${s.vcpus} vCPU · ${s.memory_mib} MiB`),
    h('td', { class: 'num' }, bytes(s.size_bytes)),
    h('td', {}, s.children?.length
      ? h('span', {}, `${s.children.length}`, h('div', { class: 'small' }, s.children.map((c, i) => [i ? ', ' : '', h('a', { href: `#/vms/${enc(c)}` }, c)])))
      : h('span', { class: 'muted' }, '0')),
    h('td', {}, ago(s.created_at)),
    h('td', {}, h('div', { class: 'actions' }, forkControls(s.name, progress),
      s.kind === 'warm'
        ? h('span', { class: 'small muted', title: 'an image\'s warm snapshot goes with Unwarm on the Images page' }, 'unwarm on Images')
        : confirmButton('Delete', `Delete ${s.name}`, () => deleteSnapshot(s.name, errEl),
          { disabled: !!s.children?.length, 'data-key': `sdel:${s.name}`, 'aria-label': `Delete snapshot ${s.name}`,
            title: s.children?.length ? 'delete the VMs started from it first' : '' })))));
}

function createForm() {
  const progress = h('div', { class: 'progress-area' });
  const vmSel = h('select', { id: 'sn-vm', name: 'vm', required: true });
  const fill = () => {
    const cur = vmSel.value;
    const running = (state.vms ?? []).filter(v => v.runtime.state === 'running');
    vmSel.replaceChildren(...running.map(v => h('option', { value: v.name }, v.name)));
    if (running.some(v => v.name === cur)) vmSel.value = cur;
  };
  fill();
  const form = h('form', { class: 'form', id: 'create-snapshot', 'aria-labelledby': 'sn-h' },
    h('h2', { id: 'sn-h' }, 'Snapshot a running VM'),
    h('p', { class: 'hint' }, 'The VM pauses while its memory, devices and disks are saved, then runs on.'),
    h('label', { for: 'sn-vm' }, 'VM'), vmSel,
    h('label', { for: 'sn-name' }, 'Name ', h('span', { class: 'hint' }, '(empty: from the VM\'s name)')),
    h('input', { id: 'sn-name', name: 'name', autocomplete: 'off', spellcheck: 'false', pattern: '[a-z][a-z0-9-]{0,62}' }),
    h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'stop' }), ' stop the VM afterwards'),
    h('button', { type: 'submit', class: 'btn primary' }, 'Snapshot'), progress);
  form.addEventListener('submit', ev => {
    ev.preventDefault();
    const fd = new FormData(form);
    if (!fd.get('vm')) {
      progress.replaceChildren(h('div', { class: 'error', role: 'alert' }, 'No running VM to snapshot: start one on the VMs page.'));
      return;
    }
    snapshotVM(progress, fd.get('vm'), fd.get('name').trim(), !!fd.get('stop'), form.querySelector('button[type=submit]'));
  });
  return { form, fill };
}

function forkForm() {
  const progress = h('div', { class: 'progress-area' });
  const src = h('select', { id: 'fk-source', name: 'source', required: true });
  const fill = () => {
    const cur = src.value;
    const snaps = state.snapshots ?? [];
    src.replaceChildren(...snaps.map(s => h('option', { value: s.name }, s.name)));
    if (snaps.some(s => s.name === cur)) src.value = cur;
  };
  fill();
  const form = h('form', { class: 'form', id: 'fork-vms', 'aria-labelledby': 'fk-h' },
    h('h2', { id: 'fk-h' }, 'Fork VMs'),
    h('p', { class: 'hint' }, 'Each restores the snapshot with its own name, address and copy-on-write disks; it keeps the parent\'s memory, processes and files.'),
    h('label', { for: 'fk-source' }, 'Snapshot'), src,
    h('div', { class: 'row3' },
      h('div', {}, h('label', { for: 'fk-count' }, 'How many'), h('input', { id: 'fk-count', name: 'count', type: 'number', min: 1, max: MAX_FORK, value: 1 })),
      h('div', {}, h('label', { for: 'fk-name' }, 'Name or prefix'), h('input', { id: 'fk-name', name: 'name', autocomplete: 'off', spellcheck: 'false', placeholder: 'SOURCE-fork' }))),
    h('button', { type: 'submit', class: 'btn primary' }, 'Fork'), progress);
  form.addEventListener('submit', ev => {
    ev.preventDefault();
    const fd = new FormData(form);
    const n = Number(fd.get('count'));
    if (!fd.get('source') || !Number.isInteger(n) || n < 1 || n > MAX_FORK) {
      progress.replaceChildren(h('div', { class: 'error', role: 'alert' }, `Pick a snapshot and 1 to ${MAX_FORK} VMs.`));
      return;
    }
    fork(progress, fd.get('source'), n, fd.get('name').trim(), form.querySelector('button[type=submit]'));
  });
  return { form, fill };
}

export function snapshotsPage(main) {
  const errEl = h('div', { class: 'alerts', 'aria-live': 'assertive' });
  const progress = h('div', { class: 'progress-area', id: 'snapshot-progress' });
  const tbody = h('tbody', {});
  const create = createForm();
  const forkF = forkForm();
  const draw = () => keepFocus(() => tbody.replaceChildren(...rows(errEl, progress)));
  main.replaceChildren(
    h('div', { class: 'page-head' }, h('h1', {}, 'Snapshots'),
      h('p', { class: 'sub' }, 'Saved running VMs (memory, devices, disks): fork new VMs from them in a fraction of a boot')),
    h('section', { class: 'card', 'aria-labelledby': 'sl-h' }, h('h2', { id: 'sl-h', class: 'sr-only' }, 'Snapshot list'), errEl,
      h('div', { class: 'table-wrap' }, h('table', { class: 'table', id: 'snapshot-table' },
        h('thead', {}, h('tr', {}, ['Name', 'Kind', 'From', 'Engine', 'Shape', 'Size', 'Children', 'Created', h('span', { class: 'sr-only' }, 'Actions')]
          .map(c => h('th', { scope: 'col' }, c)))),
        tbody)), progress),
    h('div', { class: 'grid2' }, h('section', { class: 'card' }, create.form), h('section', { class: 'card' }, forkF.form)));
  draw();
  const off = onChange(w => {
    if (w === 'snapshots' || w === 'vms') draw();
    if (w === 'snapshots') forkF.fill();
    if (w === 'vms') create.fill();
  });
  return () => off();
}

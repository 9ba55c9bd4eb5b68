// images.js — the Images page: the list as a parent/child tree, create
// from Debian, build from an image, warm/unwarm, delete; progress with
// streamed output.

import { call, follow, output } from './api.js';
import { state, onChange } from './events.js';
import { h, bytes, ago, showError, opPanel, confirmButton, keepFocus } from './ui.js';
import { runOp as runSnapOp } from './snapshots.js';

const enc = encodeURIComponent;

// tree orders images parent-first, returning [image, depth] pairs.
function tree(images) {
  const byParent = new Map();
  const names = new Set(images.map(i => i.name));
  for (const img of images) {
    const p = img.parent && names.has(img.parent) ? img.parent : '';
    if (!byParent.has(p)) byParent.set(p, []);
    byParent.get(p).push(img);
  }
  const out = [];
  const walk = (p, depth) => {
    for (const img of (byParent.get(p) ?? []).sort((a, b) => a.name.localeCompare(b.name))) {
      out.push([img, depth]);
      walk(img.name, depth + 1);
    }
  };
  walk('', 0);
  return out;
}

async function deleteImage(name, errEl) {
  showError(errEl, null);
  try {
    await call('DELETE', `/v1/images/${enc(name)}`);
  } catch (err) {
    showError(errEl, err);
  }
}

// warm boots the image once and keeps that snapshot (image warm).
function warm(name, progress, button) {
  return runSnapOp(progress, `Warming ${name}`, 'POST', `/v1/images/${enc(name)}/warm`, {}, (s, panel) => {
    panel.extra.replaceChildren(h('p', { class: 'ready' }, h('strong', {}, name), ' is warm: new VMs of it restore ',
      h('code', {}, s?.name ?? ''), ` (${s?.engine ?? ''}, ${s?.vcpus ?? '?'} vCPU · ${s?.memory_mib ?? '?'} MiB) instead of booting.`));
  }, button);
}

async function unwarm(name, errEl) {
  showError(errEl, null);
  try {
    await call('DELETE', `/v1/images/${enc(name)}/warm`);
  } catch (err) {
    showError(errEl, err);
  }
}

// warmCell says whether new VMs of img restore a warm snapshot.
function warmCell(img) {
  const w = img.warm;
  if (!w) return h('span', { class: 'muted' }, 'cold');
  return h('span', {}, w.usable ? h('span', { class: 'tag' }, `warm · ${w.engine}`) : h('span', { class: 'bad' }, 'warm, unusable'),
    h('div', { class: 'small muted' }, w.usable ? `${w.vcpus} vCPU · ${w.memory_mib} MiB` : w.reason));
}

function warmButton(img, errEl, progress) {
  if (img.warm) {
    return confirmButton('Unwarm', `Unwarm ${img.name}`, () => unwarm(img.name, errEl),
      { 'data-key': `iunwarm:${img.name}`, 'aria-label': `Unwarm image ${img.name}` });
  }
  const btn = h('button', { type: 'button', class: 'btn ghost small', 'data-key': `iwarm:${img.name}`, 'aria-label': `Warm image ${img.name}`,
    title: 'boot it once and keep that snapshot: new VMs restore it instead of booting' }, 'Warm');
  btn.onclick = () => warm(img.name, progress, btn);
  return btn;
}

function rows(errEl, progress) {
  if (state.images === null) return [h('tr', {}, h('td', { colspan: 8, class: 'muted' }, 'Loading…'))];
  if (!state.images.length) return [h('tr', {}, h('td', { colspan: 8, class: 'empty' }, 'No images yet. Create one from Debian.'))];
  const used = new Map();
  for (const vm of state.vms ?? []) used.set(vm.image_name, (used.get(vm.image_name) ?? 0) + 1);
  return tree(state.images).map(([img, depth]) => h('tr', { 'data-image': img.name },
    h('th', { scope: 'row' }, h('span', { class: 'tree', style: `padding-left:${depth * 1.25}rem` },
      depth ? h('span', { class: 'tree-mark', 'aria-hidden': 'true' }, '└ ') : null, img.name)),
    h('td', {}, img.parent || h('span', { class: 'muted' }, '—')),
    h('td', {}, img.source, img.features?.length ? h('div', { class: 'tags' }, img.features.map(f => h('span', { class: 'tag' }, f))) : null),
    h('td', {}, h('code', {}, img.kernel_version || '—')),
    h('td', { class: 'num' }, bytes(img.rootfs_size + (img.work_seed_size ?? 0))),
    h('td', {}, warmCell(img)),
    h('td', {}, ago(img.created_at), h('div', { class: 'small muted' }, `${used.get(img.name) ?? 0} VM(s)`)),
    h('td', {}, h('div', { class: 'actions' }, warmButton(img, errEl, progress), confirmButton('Delete', `Delete ${img.name}`, () => deleteImage(img.name, errEl),
      { 'data-key': `idel:${img.name}`, 'aria-label': `Delete image ${img.name}` })))));
}

// runOp posts req, then follows the operation with its output streamed
// into a <pre> below the stages.
async function runOp(progress, title, path, req, submit) {
  submit.disabled = true;
  const panel = opPanel(progress, title);
  const out = h('pre', { class: 'output', tabindex: '0', 'aria-label': 'Output' });
  panel.extra.replaceChildren(out);
  let next = 0;
  let fetching = Promise.resolve();
  const pull = id => {
    fetching = fetching.then(async () => {
      const o = await output(id, next);
      next = o.next;
      if (o.lines.length) {
        out.textContent += o.lines.join('\n') + '\n';
        out.scrollTop = out.scrollHeight;
      }
    }).catch(() => {});
  };
  try {
    const { data: op } = await call('POST', path, req);
    const final = await follow(op, o => { panel.update(o); pull(o.id); });
    pull(final.id);
    await fetching;
    if (final.state === 'failed') panel.fail(final.error);
  } catch (err) {
    panel.fail(err);
  } finally {
    panel.stop();
    submit.disabled = false;
  }
}

function createForm() {
  const progress = h('div', { class: 'progress-area' });
  const form = h('form', { class: 'form', id: 'create-image', 'aria-labelledby': 'ci-h' },
    h('h2', { id: 'ci-h' }, 'Create from Debian'),
    h('label', { for: 'ci-name' }, 'Name'), h('input', { id: 'ci-name', name: 'name', required: true, autocomplete: 'off', placeholder: 'e.g. default' }),
    h('label', { for: 'ci-suite' }, 'Suite'),
    h('select', { id: 'ci-suite', name: 'suite' }, ['bookworm', 'trixie'].map(s => h('option', { value: s }, s))),
    h('label', { for: 'ci-pkgs' }, 'Extra packages ', h('span', { class: 'hint' }, '(space separated)')),
    h('input', { id: 'ci-pkgs', name: 'packages', autocomplete: 'off', placeholder: 'e.g. git curl' }),
    h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'opencode' }), ' with opencode'),
    h('button', { type: 'submit', class: 'btn primary' }, 'Create image'), progress);
  form.addEventListener('submit', ev => {
    ev.preventDefault();
    const fd = new FormData(form);
    const req = { name: fd.get('name').trim(), suite: fd.get('suite') };
    const pk = fd.get('packages').trim();
    if (pk) req.packages = pk.split(/[\s,]+/);
    if (fd.get('opencode')) req.with = ['opencode'];
    runOp(progress, `Creating image ${req.name}`, '/v1/images', req, form.querySelector('button[type=submit]'));
  });
  return form;
}

// MAX_BUILD_UPLOAD is api.MaxBuildUpload: the files one build may carry.
const MAX_BUILD_UPLOAD = 32 * 2 ** 20;

// base64 reads a File as base64 (how the API carries []byte).
function base64(file) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(String(r.result).replace(/^data:[^,]*,/, ''));
    r.onerror = () => reject(r.error);
    r.readAsDataURL(file);
  });
}

// buildForm is image build: the script and files are uploaded (read by the
// browser from the user's machine), never named as host paths — the daemon
// opens no path a web caller names.
function buildForm() {
  const progress = h('div', { class: 'progress-area' });
  const from = h('select', { id: 'bi-from', name: 'from', required: true });
  const fill = () => {
    const cur = from.value;
    from.replaceChildren(...(state.images ?? []).map(i => h('option', { value: i.name }, i.name)));
    if ((state.images ?? []).some(i => i.name === cur)) from.value = cur;
  };
  fill();
  const form = h('form', { class: 'form', id: 'build-image', 'aria-labelledby': 'bi-h' },
    h('h2', { id: 'bi-h' }, 'Build from an image'),
    h('label', { for: 'bi-name' }, 'Name'), h('input', { id: 'bi-name', name: 'name', required: true, autocomplete: 'off', placeholder: 'e.g. dev' }),
    h('label', { for: 'bi-from' }, 'From image'), from,
    h('label', { for: 'bi-script' }, 'Script ', h('span', { class: 'hint' }, '(uploaded, run as root in /root in a builder VM)')),
    h('input', { id: 'bi-script', name: 'script', type: 'file' }),
    h('label', { for: 'bi-copy' }, 'Files ', h('span', { class: 'hint' }, '(uploaded into the directory below)')),
    h('input', { id: 'bi-copy', name: 'copy', type: 'file', multiple: true }),
    h('label', { for: 'bi-copy-dir' }, 'Copy files to'), h('input', { id: 'bi-copy-dir', name: 'copydir', autocomplete: 'off', value: '/root' }),
    h('label', { class: 'check' }, h('input', { type: 'checkbox', name: 'opencode' }), ' with opencode'),
    h('button', { type: 'submit', class: 'btn primary' }, 'Build image'), progress);
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    const fd = new FormData(form);
    const req = { name: fd.get('name').trim(), from: fd.get('from') };
    const script = form.querySelector('#bi-script').files[0];
    const files = [...form.querySelector('#bi-copy').files];
    const total = (script?.size ?? 0) + files.reduce((n, f) => n + f.size, 0);
    if (total > MAX_BUILD_UPLOAD) {
      progress.replaceChildren(h('div', { class: 'error', role: 'alert' },
        `The files are ${Math.ceil(total / 2 ** 20)} MiB together, more than the ${MAX_BUILD_UPLOAD / 2 ** 20} MiB limit. ` +
        'Download large files inside the script instead.'));
      return;
    }
    if (script) req.script_file = { name: script.name, mode: 0o755, data: await base64(script) };
    const dir = fd.get('copydir').trim().replace(/\/+$/, '') || '/root';
    if (files.length) req.copy = await Promise.all(files.map(async f => ({ dst: `${dir}/${f.name}`, file: { name: f.name, mode: 0o644, data: await base64(f) } })));
    if (fd.get('opencode')) req.with = ['opencode'];
    runOp(progress, `Building image ${req.name}`, '/v1/images/build', req, form.querySelector('button[type=submit]'));
  });
  return { form, fill };
}

export function imagesPage(main) {
  const errEl = h('div', { class: 'alerts', 'aria-live': 'assertive' });
  const tbody = h('tbody', {});
  const progress = h('div', { class: 'progress-area', id: 'warm-progress' });
  const build = buildForm();
  const draw = () => keepFocus(() => tbody.replaceChildren(...rows(errEl, progress)));
  main.replaceChildren(
    h('div', { class: 'page-head' }, h('h1', {}, 'Images'), h('p', { class: 'sub' }, 'Boot sets VMs are made from; children are built from their parent')),
    h('section', { class: 'card', 'aria-labelledby': 'il-h' }, h('h2', { id: 'il-h', class: 'sr-only' }, 'Image list'), errEl,
      h('div', { class: 'table-wrap' }, h('table', { class: 'table', id: 'image-table' },
        h('thead', {}, h('tr', {}, ['Name', 'Parent', 'Source', 'Kernel', 'Size', 'Warm', 'Created', h('span', { class: 'sr-only' }, 'Actions')].map(c => h('th', { scope: 'col' }, c)))),
        tbody)), progress),
    h('div', { class: 'grid2' }, h('section', { class: 'card' }, createForm()), h('section', { class: 'card' }, build.form)));
  draw();
  const off = onChange(w => {
    if (w === 'images' || w === 'vms') draw();
    if (w === 'images') build.fill();
  });
  return () => off();
}

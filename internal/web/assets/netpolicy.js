// netpolicy.js — a VM's network egress policy card (mirrors `banger vm
// policy NAME [--mode|--allow]`): what it may reach, packets denied, and a
// form to change it (live when the VM runs).

import { call, get } from './api.js';
import { h, errorBox, showError } from './ui.js';

const enc = encodeURIComponent;

export function policyCard(name, signal) {
  const facts = h('dl', { class: 'facts' });
  const errEl = h('div', { 'aria-live': 'assertive' });
  const mode = h('select', { id: 'np-mode', 'aria-label': 'Policy mode' },
    ...['internet', 'none', 'allow'].map(m => h('option', { value: m }, m)));
  const allow = h('textarea', { id: 'np-allow', rows: '3', placeholder: 'one per line: 10.1.0.0/16, 192.0.2.7:443, example.com, *.debian.org', 'aria-label': 'Allowed destinations' });
  const apply = h('button', { type: 'submit' }, 'Apply');
  const form = h('form', { class: 'stack' }, h('label', { for: 'np-mode' }, 'Mode '), mode,
    h('label', { for: 'np-allow' }, 'Allowed (mode allow)'), allow, apply);
  const render = st => {
    const p = st.policy ?? {};
    const fact = (k, v) => [h('dt', {}, k), h('dd', {}, v || '—')];
    facts.replaceChildren(...fact('Mode', p.mode), ...fact('Allowed', (p.allow ?? []).map(a => h('code', {}, a + ' '))),
      ...fact('Denied packets', st.applied ? String(st.denied_packets) : 'not running: applies at start'));
  };
  const load = async (fillForm) => {
    try {
      const st = await get(`/v1/vms/${enc(name)}/policy`, signal);
      render(st);
      if (fillForm) {
        mode.value = st.policy?.mode ?? 'internet';
        allow.value = (st.policy?.allow ?? []).join('\n');
      }
    } catch (err) {
      if (err.name !== 'AbortError') facts.replaceChildren(errorBox(err));
    }
  };
  form.addEventListener('submit', async ev => {
    ev.preventDefault();
    showError(errEl, null);
    const entries = allow.value.split(/[\s,]+/).filter(Boolean);
    const policy = { mode: mode.value, allow: mode.value === 'allow' ? entries : [] };
    try {
      const { data } = await call('PUT', `/v1/vms/${enc(name)}/policy`, { policy }, signal);
      render(data);
    } catch (err) {
      showError(errEl, err);
    }
  });
  load(true);
  const card = h('section', { class: 'card', 'aria-labelledby': 'np-h' },
    h('h2', { id: 'np-h' }, 'Network policy'), facts, errEl, form);
  return { card, refresh: () => load(false) };
}

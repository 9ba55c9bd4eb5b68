// app.js — the banger web UI: a hash router over the pages, fed by the
// event stream. Plain ES modules, no build step.

import { connect } from './events.js';
import { loggedIn, loggedOutError } from './api.js';
import { errorBox } from './ui.js';
import { vmsPage, vmPage } from './vms.js';
import { imagesPage } from './images.js';
import { snapshotsPage } from './snapshots.js';
import { hostPage } from './host.js';
import { terminalPage } from './terminal.js';

const main = document.getElementById('main');
let cleanup = null;

function route() {
  const parts = (location.hash.replace(/^#\/?/, '') || 'vms').split('/').map(decodeURIComponent);
  if (cleanup) { cleanup(); cleanup = null; }
  let section = parts[0];
  if (section === 'vms' && parts[1] && parts[2] === 'terminal') cleanup = terminalPage(main, parts[1]);
  else if (section === 'vms' && parts[1]) cleanup = vmPage(main, parts[1]);
  else if (section === 'images') cleanup = imagesPage(main);
  else if (section === 'snapshots') cleanup = snapshotsPage(main);
  else if (section === 'host') cleanup = hostPage(main);
  else { section = 'vms'; cleanup = vmsPage(main); }
  for (const a of document.querySelectorAll('[data-nav]')) {
    if (a.dataset.nav === section) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  document.title = `banger · ${parts.filter(Boolean).join(' · ') || 'vms'}`;
}

if (!loggedIn()) {
  // Opened without /login?token= (or its localStorage was cleared).
  main.replaceChildren(errorBox(loggedOutError()));
} else {
  connect(document.getElementById('conn'));
  window.addEventListener('hashchange', () => { route(); main.focus({ preventScroll: true }); });
  route();
}

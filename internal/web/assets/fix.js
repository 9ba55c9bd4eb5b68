// fix.js — a daemon error's fix action in the web UI's own words. An action
// is a banger command as data ({verb: 'vm start', args: ['dev']}); the CLI
// prints it as a command line, the browser user gets words instead (and, for
// what this UI can do itself, a button). No DOM here, so it runs under node.

// noun names the thing a verb acts on, e.g. "vm start" → "VM".
const NOUN = { vm: 'VM', image: 'image', snapshot: 'snapshot' };

// actionWords describes an action in plain words ('' for none).
export function actionWords(action) {
  if (!action || !action.verb) return '';
  const args = action.args || [];
  const names = args.filter(a => !a.startsWith('-'));
  const force = args.includes('--force');
  const list = names.join(', ');
  switch (action.verb) {
    case 'vm list': return 'see the VMs page';
    case 'image list': return 'see the Images page';
    case 'snapshot list': return 'see the Snapshots page';
    case 'image warm': return `warm image ${list} (Images page)`;
    case 'image unwarm': return `unwarm image ${list} (Images page)`;
    case 'vm logs': return `open the console of VM ${list}`;
    case 'image create': return `create image ${list} from Debian (on the host)`;
    case 'image delete': return `delete image ${list}${force ? ', forced' : ''}`;
    case 'daemon start': return 'start bangerd on the host';
    case 'daemon stop': return 'stop the other bangerd on the host';
    case 'daemon logs': return "read bangerd's log on the host";
    case 'doctor': return 'check the host (Host page)';
  }
  const [noun, verb] = action.verb.split(' ');
  const what = NOUN[noun] ? `${NOUN[noun]}${names.length > 1 ? 's' : ''}` : noun;
  return `${verb || noun} ${what}${list ? ' ' + list : ''}`.trim();
}

// buttonAction is the API call that performs an action this UI can do
// itself — {method, path, label} — or null.
export function buttonAction(action) {
  if (!action) return null;
  const name = (action.args || [])[0];
  const verb = { 'vm start': 'start', 'vm stop': 'stop', 'vm restart': 'restart' }[action.verb];
  if (!verb || !name || (action.args || []).length !== 1) return null;
  return { method: 'POST', path: `/v1/vms/${encodeURIComponent(name)}/${verb}`, label: `${verb[0].toUpperCase()}${verb.slice(1)} ${name}` };
}

// fixText joins the daemon's words and the action's words.
export function fixText(err) {
  return [err.fix, actionWords(err.action)].filter(Boolean).join(': ');
}

// login.js — the /login?token= page: the token goes to this origin's
// localStorage (a page on another port of this host is another origin and
// cannot read it; no cookie carries it), the token URL leaves the history,
// and the app opens. The API gets the token as an Authorization header.
const token = new URLSearchParams(location.search).get('token');
if (token) localStorage.setItem('banger.token', token);
location.replace('/');

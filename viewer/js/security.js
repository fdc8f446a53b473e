// The signed-in user's security page: enrol a TOTP second factor (RFC 6238) by scanning
// the QR code (made by the server: the page loads nothing from elsewhere) or typing the
// secret, confirm it with a first code, or remove it with a current code. Administrators
// that must enrol (MINIPACS_AUTH_ADMIN_TOTP=required) are sent here after signing in.
// It uses the viewer's session: sign in at ./ first.

import { applyTranslations, onLangChange, otherLang, setLang, t } from './i18n.js';

const status = document.getElementById('security-status');
const start = document.getElementById('totp-start');
const enrol = document.getElementById('totp-enrol');
const remove = document.getElementById('totp-remove');
const error = document.getElementById('security-error');
const onward = document.getElementById('security-continue');
let statusKey = '';
let errorMessage = null;

function show(key) {
  statusKey = key;
  status.textContent = t(key);
}

function fail(key, params = {}) {
  errorMessage = key ? [key, params] : null;
  error.hidden = !key;
  if (key) error.textContent = t(key, params);
}

async function call(method, path, body) {
  const response = await fetch(`../auth/${path}`, {
    method,
    credentials: 'same-origin',
    headers: { Accept: 'application/json', ...(body ? { 'Content-Type': 'application/json' } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  let answer = {};
  try {
    answer = await response.json();
  } catch {
    // 204: no body
  }
  return { status: response.status, ok: response.ok, answer };
}

function refusal(answer, status) {
  if (status === 401) return ['security.signIn'];
  const text = String(answer.error ?? `HTTP ${status}`);
  if (/must keep a second factor/.test(text)) return ['security.adminKeeps'];
  if (/one-time code/.test(text)) return ['security.wrongCode'];
  return ['auth.other', { error: text }];
}

async function load() {
  fail('');
  const { ok, status: code, answer } = await call('GET', 'totp');
  start.hidden = enrol.hidden = remove.hidden = true;
  onward.hidden = true;
  if (!ok) {
    show('security.unknown');
    fail(...refusal(answer, code));
    return;
  }
  document.body.dataset.totp = answer.enabled ? 'enabled' : 'off';
  if (answer.enabled) {
    show('security.enabled');
    remove.hidden = false;
  } else {
    show(answer.must_enroll ? 'security.mustEnrol' : 'security.off');
    start.hidden = false;
  }
}

start.addEventListener('click', async () => {
  fail('');
  const { ok, status: code, answer } = await call('POST', 'totp/enroll');
  if (!ok) return fail(...refusal(answer, code));
  document.getElementById('totp-qr').src = answer.qr_code;
  document.getElementById('totp-secret').textContent = answer.secret;
  start.hidden = true;
  enrol.hidden = false;
  document.body.dataset.totp = 'pending';
  document.getElementById('totp-code').focus();
});

enrol.addEventListener('submit', async (event) => {
  event.preventDefault();
  const { ok, status: code, answer } = await call('POST', 'totp/confirm', { code: document.getElementById('totp-code').value.trim() });
  if (!ok) return fail(...refusal(answer, code));
  document.getElementById('totp-code').value = '';
  await load();
  onward.hidden = false;
});

remove.addEventListener('submit', async (event) => {
  event.preventDefault();
  const input = document.getElementById('totp-disable-code');
  const { ok, status: code, answer } = await call('POST', 'totp/disable', { code: input.value.trim() });
  input.value = '';
  if (!ok) return fail(...refusal(answer, code));
  await load();
});

document.getElementById('lang-switch').addEventListener('click', () => setLang(otherLang()));
onLangChange(() => {
  document.title = t('security.title');
  if (statusKey) status.textContent = t(statusKey);
  if (errorMessage) error.textContent = t(...errorMessage);
});
applyTranslations(document);
document.title = t('security.title');
load();

// Who is using the viewer: the sign-in form, the forced password change (one-time
// passwords), the user in the header, sign-out and the idle lock.
//
// The server's /auth routes sit next to /viewer/ on the same origin. A successful
// POST /auth/login sets an HttpOnly, SameSite=Strict session cookie, so every fetch of
// the viewer (credentials: 'same-origin') and every <img> carries the session; the viewer
// never sees or stores the token. With MINIPACS_AUTH=off, /auth/me answers an anonymous
// user and the viewer shows no sign-in at all.

import { setSessionHint } from './dicomweb.js';
import { onLangChange, otherLang, setLang, t } from './i18n.js';

// The server locks a session after this many idle minutes (its defaults for
// MINIPACS_AUTH_SESSION_IDLE_MINUTES and ..._ADMIN_SESSION_IDLE_MINUTES). Without input for
// as long, the viewer signs out by itself, so the lock screen hides the images even when
// the viewer asks the server nothing (frames already loaded).
const IDLE_MINUTES = 15;
const ADMIN_IDLE_MINUTES = 5;
const IDLE_CHECK_MS = 15_000;

// Server refusals (English, from access/accounts.py and access/passwords.py) → strings.
const REFUSALS = [
  [/^wrong user name or password/, () => ['auth.wrong']],
  [/^account (\S+) is locked until (\d\d:\d\d) UTC/, (m) => ['auth.locked', { user: m[1], time: m[2] }]],
  [/^account (\S+) is disabled(?::\s*(.*))?/, (m) => ['auth.disabled', { user: m[1], reason: m[2] ? `: ${m[2]}` : '' }]],
  [/^the current password is wrong/, () => ['auth.wrongCurrent']],
  [/needs at least (\d+) characters/, (m) => ['auth.minLength', { n: m[1] }]],
  [/breached/, () => ['auth.breached']],
  [/must not contain the user name/, () => ['auth.hasUser']],
  [/needs three of/, () => ['auth.kinds']],
  [/must differ from the last (\d+)/, (m) => ['auth.history', { n: m[1] }]],
  [/^a one-time code from the authenticator app is required/, () => ['auth.totpNeeded']],
  [/^the one-time code .* is wrong or expired/, () => ['auth.totpWrong']],
  [/^this one-time code was already used/, () => ['auth.totpUsed']],
];

/** A server refusal as [i18n key, params]. */
export function refusalMessage(serverText) {
  for (const [pattern, toMessage] of REFUSALS) {
    const m = pattern.exec(serverText);
    if (m) return toMessage(m);
  }
  return ['auth.other', { error: serverText }];
}

function authUrl(path) {
  return new URL(`../auth/${path}`, window.location.href).href;
}

async function postJson(path, body) {
  return fetch(authUrl(path), {
    method: 'POST',
    credentials: 'same-origin',
    headers: { 'Content-Type': 'application/json', Accept: 'application/json' },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

async function errorText(response) {
  try {
    const body = await response.json();
    return String(body.error ?? body.detail ?? `HTTP ${response.status}`);
  } catch {
    return `HTTP ${response.status}`;
  }
}

export class Session {
  /** @param {{onLock?: () => void}} hooks onLock: the form now hides the page (stop cine) */
  constructor({ onLock = () => {} } = {}) {
    this.onLock = onLock;
    /** @type {{name: string, kind: string, role: string, must_change_password: boolean, actions: string[]} | null} */
    this.user = null;
    this.pending = null; // the sign-in in progress: resolves once signed in
    this.resolvePending = null;
    this.lastActivity = Date.now();
    this.idleTimer = 0;
    this.noticeKey = '';
    this.message = null; // [key, params] of the error shown, re-translated on a language switch
    this.messageTarget = null;
    this.view = document.getElementById('login-view');
    this.loginForm = document.getElementById('login-form');
    this.passwordForm = document.getElementById('password-form');
    this.shareForm = document.getElementById('share-form');
    this.shareToken = '';
    this.notice = document.getElementById('login-notice');
    this.userBox = document.getElementById('user-box');
    this.bind();
  }

  bind() {
    this.loginForm.addEventListener('submit', (event) => {
      event.preventDefault();
      this.submitLogin();
    });
    this.passwordForm.addEventListener('submit', (event) => {
      event.preventDefault();
      this.submitPassword();
    });
    this.shareForm.addEventListener('submit', (event) => {
      event.preventDefault();
      this.openShare(document.getElementById('share-pin').value.trim());
    });
    for (const button of this.view.querySelectorAll('[data-lang-switch]')) {
      button.addEventListener('click', () => setLang(otherLang()));
    }
    document.getElementById('logout').addEventListener('click', () => this.logout());
    onLangChange(() => {
      this.showMessage(this.messageTarget, this.message);
      this.showUser();
      if (this.noticeKey) this.notice.textContent = t(this.noticeKey);
    });
    for (const type of ['pointerdown', 'keydown', 'wheel']) {
      document.addEventListener(type, () => (this.lastActivity = Date.now()), { capture: true, passive: true });
    }
  }

  /** Resolves once someone may use the viewer (at once when already signed in, or auth off). */
  async start() {
    // A share link (/viewer/#share=TOKEN): the token is in the fragment, which no request
    // carries; trade it (and its PIN) for a session limited to the shared studies.
    const share = new URLSearchParams(window.location.hash.slice(1)).get('share');
    if (share) {
      this.shareToken = share;
      history.replaceState(null, '', window.location.pathname + window.location.search);
      const opened = this.signIn('', 'share');
      await this.openShare('');
      return opened;
    }
    let response;
    try {
      response = await fetch(authUrl('me'), { credentials: 'same-origin', headers: { Accept: 'application/json' } });
    } catch (error) {
      // No answer at all: the viewer's own requests will report it; nothing to sign in to.
      console.error(error);
      return;
    }
    if (response.ok) {
      const me = await response.json();
      if (me.must_enroll_totp && !me.must_change_password) {
        window.location.assign(new URL('security.html', window.location.href).href);
        return;
      }
      if (me.must_change_password) {
        this.user = me;
        await this.signIn('', 'password');
      } else {
        this.signedIn(me);
      }
      return;
    }
    if (response.status === 401) {
      this.offerSingleSignOn();
      await this.signIn('');
      return;
    }
    // Another answer (an older server without /auth): carry on as before sign-in existed.
    console.warn(`GET /auth/me answered ${response.status}; the viewer continues without sign-in`);
  }

  /** GET /auth/oidc: with single sign-on on, the form offers "Sign in with <provider>",
   * which leaves for the provider and comes back to this same address signed in. */
  async offerSingleSignOn() {
    const button = document.getElementById('login-sso');
    let sso;
    try {
      const response = await fetch(authUrl('oidc'), { credentials: 'same-origin', headers: { Accept: 'application/json' } });
      sso = response.ok ? await response.json() : { enabled: false };
    } catch (error) {
      console.error(error);
      return;
    }
    if (!sso.enabled) return;
    const label = () => (button.textContent = t('login.sso', { name: sso.name }));
    label();
    onLangChange(label);
    button.hidden = false;
    button.addEventListener('click', () => {
      const back = window.location.pathname + window.location.search;
      window.location.assign(`${authUrl('oidc/login')}?next=${encodeURIComponent(back)}`);
    });
  }

  /**
   * The server refused a request (401): show the sign-in form over the current view and
   * resolve once signed in again. Concurrent refusals share one sign-in.
   */
  reauthenticate() {
    return this.signIn(this.user ? 'login.expired' : '');
  }

  signIn(noticeKey, form = 'login') {
    // Already asking (several requests refused at once): leave the form as the user has it.
    if (this.pending) return this.pending;
    this.pending = new Promise((resolve) => (this.resolvePending = resolve));
    setSessionHint('out');
    this.onLock();
    this.showForm(form, noticeKey);
    return this.pending;
  }

  /** POST /auth/share; on success open the shared studies as an IID link would. */
  async openShare(pin) {
    const errorEl = document.getElementById('share-error');
    let response;
    try {
      response = await postJson('share', { token: this.shareToken, pin });
    } catch (error) {
      this.showMessage(errorEl, ['login.unreachable', { error: error?.message ?? String(error) }]);
      return;
    }
    if (!response.ok) {
      const text = await errorText(response);
      if (/PIN/.test(text) && !/revoked/.test(text)) {
        this.showMessage(errorEl, pin ? ['share.wrongPin'] : null);
        document.getElementById('share-pin').focus();
      } else {
        this.shareForm.querySelector('label').hidden = true;
        this.shareForm.querySelector('[type=submit]').hidden = true;
        this.showMessage(errorEl, ['share.invalid']);
      }
      return;
    }
    const opened = await response.json();
    const link = new URLSearchParams({ requestType: 'STUDY', studyUID: opened.study_uids.join(',') });
    history.replaceState(null, '', `${window.location.pathname}?${link}`);
    this.shareToken = '';
    this.signedIn({ name: t('share.user'), kind: 'share', role: 'clinician', must_change_password: false, actions: ['query', 'view'] });
  }

  showForm(form, noticeKey = '') {
    this.noticeKey = noticeKey;
    this.notice.textContent = noticeKey ? t(noticeKey) : '';
    this.notice.hidden = !noticeKey;
    this.showMessage(null, null);
    this.loginForm.hidden = form !== 'login';
    this.passwordForm.hidden = form !== 'password';
    this.shareForm.hidden = form !== 'share';
    this.view.hidden = false;
    document.body.dataset.signIn = form;
    if (form === 'share') {
      document.getElementById('share-pin').focus();
    } else if (form === 'login') {
      const user = document.getElementById('login-user');
      const password = document.getElementById('login-password');
      if (this.user?.kind === 'user' && !user.value) user.value = this.user.name;
      password.value = '';
      this.showCodeField(false);
      (user.value ? password : user).focus();
    } else {
      const old = document.getElementById('password-old');
      (old.value ? document.getElementById('password-new') : old).focus();
    }
  }

  showMessage(target, message) {
    for (const el of this.view.querySelectorAll('.login-error')) el.hidden = true;
    this.message = message;
    this.messageTarget = target;
    if (!target || !message) return;
    target.textContent = t(...message);
    target.hidden = false;
  }

  /** The one-time code field: shown when the server answers that the account needs it. */
  showCodeField(shown) {
    document.getElementById('login-totp-field').hidden = !shown;
    const code = document.getElementById('login-totp');
    code.value = '';
    if (shown) code.focus();
  }

  async submitLogin() {
    const errorEl = document.getElementById('login-error');
    const button = this.loginForm.querySelector('[type=submit]');
    const username = document.getElementById('login-user').value.trim();
    const password = document.getElementById('login-password').value;
    if (!username || !password) {
      this.showMessage(errorEl, ['auth.wrong']);
      return;
    }
    const codeShown = !document.getElementById('login-totp-field').hidden;
    const totp = codeShown ? document.getElementById('login-totp').value.trim() : '';
    button.disabled = true;
    try {
      const response = await postJson('login', totp ? { username, password, totp } : { username, password });
      if (!response.ok) {
        const message = refusalMessage(await errorText(response));
        if (message[0].startsWith('auth.totp')) this.showCodeField(true);
        this.showMessage(errorEl, message);
        return;
      }
      const me = await response.json();
      if (me.must_enroll_totp && !me.must_change_password) {
        // An administrator who must enrol a second factor: the security page does it,
        // then leads back here.
        window.location.assign(new URL('security.html', window.location.href).href);
        return;
      }
      if (me.must_change_password) {
        this.user = me;
        document.getElementById('password-old').value = password;
        this.showForm('password');
        return;
      }
      this.signedIn(me);
    } catch (error) {
      this.showMessage(errorEl, ['login.unreachable', { error: error?.message ?? String(error) }]);
    } finally {
      button.disabled = false;
    }
  }

  async submitPassword() {
    const errorEl = document.getElementById('password-error');
    const button = this.passwordForm.querySelector('[type=submit]');
    const oldPassword = document.getElementById('password-old').value;
    const newPassword = document.getElementById('password-new').value;
    if (newPassword !== document.getElementById('password-confirm').value) {
      this.showMessage(errorEl, ['login.change.mismatch']);
      return;
    }
    button.disabled = true;
    try {
      const response = await postJson('password', { old_password: oldPassword, new_password: newPassword });
      if (!response.ok) {
        this.showMessage(errorEl, refusalMessage(await errorText(response)));
        return;
      }
      for (const id of ['password-old', 'password-new', 'password-confirm']) document.getElementById(id).value = '';
      if (this.user?.must_enroll_totp) {
        window.location.assign(new URL('security.html', window.location.href).href);
        return;
      }
      // What the account may do now: before the change it could only change its password.
      const me = await fetch(authUrl('me'), { credentials: 'same-origin', headers: { Accept: 'application/json' } });
      this.signedIn(me.ok ? await me.json() : { ...this.user, must_change_password: false });
    } catch (error) {
      this.showMessage(errorEl, ['login.unreachable', { error: error?.message ?? String(error) }]);
    } finally {
      button.disabled = false;
    }
  }

  signedIn(me) {
    const resolve = this.resolvePending;
    this.pending = null;
    this.resolvePending = null;
    this.user = me;
    setSessionHint('in');
    this.view.hidden = true;
    delete document.body.dataset.signIn;
    document.getElementById('login-password').value = '';
    this.showUser();
    this.lastActivity = Date.now();
    clearInterval(this.idleTimer);
    if (me.kind === 'user') this.idleTimer = setInterval(() => this.checkIdle(), IDLE_CHECK_MS);
    resolve?.();
  }

  showUser() {
    const user = this.user;
    // Auth off (anonymous) or not signed in: nobody to show, nothing to sign out of.
    this.userBox.hidden = !user || user.kind === 'anonymous' || !!this.pending;
    if (!user) return;
    document.getElementById('user-name').textContent = user.name;
    // Only a signed-in person has a second factor to manage (not a share link).
    this.userBox.querySelector('.security-link').hidden = user.kind !== 'user';
    const roleKey = `role.${user.role}`;
    const role = t(roleKey);
    document.getElementById('user-role').textContent = role === roleKey ? user.role : role;
  }

  idleMinutes() {
    return this.user?.role === 'admin' ? ADMIN_IDLE_MINUTES : IDLE_MINUTES;
  }

  async checkIdle() {
    if (this.pending || this.user?.kind !== 'user') return;
    if (Date.now() - this.lastActivity < this.idleMinutes() * 60_000) return;
    clearInterval(this.idleTimer);
    await this.endSession();
    this.signIn('login.locked');
  }

  async endSession() {
    try {
      await postJson('logout');
    } catch (error) {
      // The server ends the session itself after the idle time.
      console.error(error);
    }
  }

  /** Sign out; the page reloads at the same address, so nothing of the study stays in memory. */
  async logout() {
    clearInterval(this.idleTimer);
    await this.endSession();
    setSessionHint('out');
    window.location.reload();
  }
}

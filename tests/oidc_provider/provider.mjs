// A real OpenID Provider for tests/test_oidc.py: panva's oidc-provider (an OpenID
// Certified implementation) on a free loopback port, with the test's clients, accounts
// and signing key, and a plain login form in place of the library's development pages.
//
//   node provider.mjs CONFIG.json
//
// CONFIG: {"jwks": {"keys": [private JWK]}, "audience": "...", "clients": [...],
//          "accounts": {"name": {"password", "name", "roles"}}, "ready_file": "..."}
// Once listening it writes {"issuer": "http://127.0.0.1:PORT"} to ready_file.

import { readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';

import Provider from 'oidc-provider';

const config = JSON.parse(readFileSync(process.argv[2], 'utf8'));
const accounts = config.accounts;

function escapeHtml(text) {
  return String(text).replace(/[&<>"']/g, (c) => `&#${c.charCodeAt(0)};`);
}

function loginPage(uid, clientId, error) {
  return `<!doctype html><html><head><meta charset="utf-8"><title>Test IdP sign-in</title></head>
<body><h1>Test IdP</h1><p>Sign in to continue to ${escapeHtml(clientId)}</p>
${error ? `<p id="idp-error">${escapeHtml(error)}</p>` : ''}
<form method="post" action="/interaction/${uid}/login" autocomplete="off">
<label>User <input id="idp-user" name="login" required></label>
<label>Password <input id="idp-password" name="password" type="password" required></label>
<button id="idp-submit" type="submit">Sign in</button></form></body></html>`;
}

function readForm(req) {
  return new Promise((resolve, reject) => {
    let body = '';
    req.setEncoding('utf8');
    req.on('data', (chunk) => {
      body += chunk;
      if (body.length > 10_000) reject(new Error('form too large'));
    });
    req.on('end', () => resolve(new URLSearchParams(body)));
    req.on('error', reject);
  });
}

const server = createServer();
server.listen(0, '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const provider = new Provider(issuer, {
    jwks: config.jwks,
    clients: config.clients,
    extraClientMetadata: { properties: ['roles'] },
    cookies: { keys: ['minipacs-test-provider-cookie-key'] },
    pkce: { required: () => true },
    // Keycloak puts the role claims in the ID token too; so does this provider.
    conformIdTokenClaims: false,
    claims: { openid: ['sub'], profile: ['name', 'preferred_username'], roles: ['roles'] },
    scopes: ['openid', 'offline_access', 'profile', 'roles'],
    async findAccount(_ctx, id) {
      const account = accounts[id];
      if (!account) return undefined;
      return {
        accountId: id,
        async claims() {
          return { sub: id, preferred_username: id, name: account.name, roles: account.roles };
        },
      };
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      // Access tokens as JWTs for one API (RFC 9068), as Keycloak issues them.
      resourceIndicators: {
        enabled: true,
        defaultResource: () => config.audience,
        useGrantedResource: () => true,
        getResourceServerInfo: () => ({
          scope: 'pacs',
          audience: config.audience,
          accessTokenFormat: 'jwt',
          accessTokenTTL: 600,
          jwt: { sign: { alg: 'RS256' } },
        }),
      },
    },
    async extraTokenClaims(_ctx, token) {
      // The roles (and user name) of the account, or of the client for client_credentials.
      if (token.accountId && accounts[token.accountId]) {
        return { roles: accounts[token.accountId].roles, preferred_username: token.accountId };
      }
      const client = config.clients.find((c) => c.client_id === token.clientId);
      return client?.roles ? { roles: client.roles } : undefined;
    },
    interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
    ttl: { AccessToken: 600, ClientCredentials: 600, IdToken: 600, Interaction: 600, Session: 600, Grant: 600, AuthorizationCode: 60 },
  });
  const callback = provider.callback();

  async function interaction(req, res) {
    const details = await provider.interactionDetails(req, res);
    const { uid, prompt, params } = details;
    if (prompt.name === 'login') {
      if (req.method === 'GET') {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
        res.end(loginPage(uid, params.client_id, ''));
        return;
      }
      const form = await readForm(req);
      const account = accounts[form.get('login')];
      if (!account || account.password !== form.get('password')) {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8' });
        res.end(loginPage(uid, params.client_id, 'Wrong user or password'));
        return;
      }
      await provider.interactionFinished(req, res, { login: { accountId: form.get('login') } },
        { mergeWithLastSubmission: false });
      return;
    }
    // consent: a first-party client, granted what it asks without a question.
    const grant = details.grantId
      ? await provider.Grant.find(details.grantId)
      : new provider.Grant({ accountId: details.session.accountId, clientId: params.client_id });
    if (prompt.details.missingOIDCScope) grant.addOIDCScope(prompt.details.missingOIDCScope.join(' '));
    if (prompt.details.missingOIDCClaims) grant.addOIDCClaims(prompt.details.missingOIDCClaims);
    for (const [indicator, scopes] of Object.entries(prompt.details.missingResourceScopes ?? {})) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
    const grantId = await grant.save();
    await provider.interactionFinished(req, res, { consent: { grantId } }, { mergeWithLastSubmission: true });
  }

  server.on('request', (req, res) => {
    if (req.url.startsWith('/interaction/')) {
      interaction(req, res).catch((error) => {
        res.writeHead(400, { 'content-type': 'text/plain' });
        res.end(`interaction failed: ${error.message}`);
      });
      return;
    }
    callback(req, res);
  });
  writeFileSync(config.ready_file, JSON.stringify({ issuer }));
});

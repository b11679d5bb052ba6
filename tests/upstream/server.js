// Test upstream OAuth 2.0 / OpenID Connect authorization server.
//
// A real node-oidc-provider (pinned in package.json) configured for the
// vault-plugin-secrets-oauth end-to-end tests, plus:
//   - browser-less login/consent pages under /interaction/* (plain HTML forms),
//   - browser-less device-flow pages (/device, plain HTML forms),
//   - test-only JSON routes under /test/* (mint grants, stats, token lookup),
//   - an unbounded in-memory adapter that can be saved to / loaded from a
//     JSON file (STATE_FILE) so the server can be restarted with its tokens.
//
// Everything is documented in README.md next to this file.

import { AsyncLocalStorage } from 'node:async_hooks';
import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { URL, URLSearchParams } from 'node:url';

import Provider, { errors } from 'oidc-provider';

const TOKEN_EXCHANGE_GRANT = 'urn:ietf:params:oauth:grant-type:token-exchange';

// ---------------------------------------------------------------------------
// Configuration from the environment
// ---------------------------------------------------------------------------

function fail(msg) {
  process.stderr.write(`upstream: ${msg}\n`);
  process.exit(2);
}

function intEnv(name, def) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return def;
  const n = Number(raw);
  if (!Number.isSafeInteger(n) || n <= 0) fail(`${name} must be a positive integer (seconds), got ${JSON.stringify(raw)}`);
  return n;
}

const PORT = Number(process.env.PORT);
if (!process.env.PORT || !Number.isSafeInteger(PORT) || PORT <= 0 || PORT > 65535) {
  fail('PORT is required (1-65535)');
}
const HOST = process.env.HOST || '127.0.0.1';
const BASE_URL = `http://${HOST.includes(':') ? `[${HOST}]` : HOST}:${PORT}`;
// ISSUER may override the issuer (e.g. when reached through another name);
// by default it is http://HOST:PORT. No trailing slash.
const ISSUER = (process.env.ISSUER || BASE_URL).replace(/\/+$/, '');
const CLIENT_SECRET = process.env.CLIENT_SECRET || 'dev-client-secret';
const ACCESS_TOKEN_TTL = intEnv('ACCESS_TOKEN_TTL', 300);
const CLIENT_CREDENTIALS_TTL = intEnv('CLIENT_CREDENTIALS_TTL', 300);
const REFRESH_TOKEN_TTL = intEnv('REFRESH_TOKEN_TTL', 14 * 24 * 60 * 60);
// Device flow polling interval returned by POST /device/auth.
const DEVICE_POLL_INTERVAL = intEnv('DEVICE_POLL_INTERVAL', 1);
// A grant outlives every refresh token issued for it (rotation gives every new
// refresh token a fresh REFRESH_TOKEN_TTL, the grant's own expiry is fixed).
const GRANT_TTL = Math.max(365 * 24 * 60 * 60, REFRESH_TOKEN_TTL * 4);
// UPSTREAM_LOG=1: one stdout line per request (method, path, status, ms).
const REQUEST_LOG = ['1', 'true', 'yes'].includes((process.env.UPSTREAM_LOG || '').toLowerCase());
const STATE_FILE = process.env.STATE_FILE ? path.resolve(process.env.STATE_FILE) : undefined;
// ROTATION_GRACE: refresh-token rotation grace period in seconds (0 or unset:
// off, the default). Within it, a rotated (consumed) refresh token is still
// accepted once more by the token endpoint and rotated again (a new refresh
// token, as Okta, Auth0 and Ory Hydra do), instead of triggering reuse
// detection. After it, reuse detection applies as usual.
const ROTATION_GRACE = (() => {
  const raw = process.env.ROTATION_GRACE;
  if (raw === undefined || raw === '' || raw === '0') return 0;
  return intEnv('ROTATION_GRACE', 0);
})();

const DEFAULT_REDIRECT_URI = 'http://127.0.0.1/callback';
const REDIRECT_URIS = [...new Set([
  DEFAULT_REDIRECT_URI,
  ...(process.env.REDIRECT_URIS || '').split(',').map((s) => s.trim()).filter(Boolean),
])];

const SCOPES = ['openid', 'offline_access', 'api:read', 'api:write', 'api:admin'];
const API_SCOPES = ['api:read', 'api:write', 'api:admin'];
const DEVICE_CODE_GRANT = 'urn:ietf:params:oauth:grant-type:device_code';

// ---------------------------------------------------------------------------
// Unbounded in-memory adapter (with optional JSON persistence)
// ---------------------------------------------------------------------------

// Models whose payload carries a grantId and that revokeByGrantId must remove.
const GRANTABLE = new Set([
  'AccessToken',
  'AuthorizationCode',
  'RefreshToken',
  'DeviceCode',
  'BackchannelAuthenticationRequest',
  'PreAuthorizedCode',
]);

const MAX_TOMBSTONES = 1_000_000;

const epochTime = () => Math.floor(Date.now() / 1000);

// One store shared by all models. Keys are "<Model>:<id>".
class Store {
  constructor() {
    this.entries = new Map(); // key -> { payload, expiresAt } (expiresAt: ms epoch, 0 = never)
    this.sessionUids = new Map(); // Session uid -> Session id
    this.userCodes = new Map(); // DeviceCode userCode -> DeviceCode id
    this.grants = new Map(); // grantId -> Set of keys of tokens/codes belonging to it
    // Deleted refresh tokens -> their grantId, so /test/stats can attribute a
    // request presenting an already removed refresh token to its grant.
    this.rtTombstones = new Map();
  }

  static split(key) {
    const i = key.indexOf(':');
    return [key.slice(0, i), key.slice(i + 1)];
  }

  // Returns the live entry for key, dropping it if it expired.
  get(key, now = Date.now()) {
    const entry = this.entries.get(key);
    if (!entry) return undefined;
    if (entry.expiresAt && entry.expiresAt <= now) {
      this.delete(key);
      return undefined;
    }
    return entry;
  }

  set(key, payload, expiresAt) {
    if (this.entries.has(key)) this.delete(key);
    const [model, id] = Store.split(key);
    this.entries.set(key, { payload, expiresAt });
    if (model === 'Session' && payload.uid) this.sessionUids.set(payload.uid, id);
    if (payload.userCode) this.userCodes.set(payload.userCode, id);
    if (GRANTABLE.has(model) && payload.grantId) {
      let members = this.grants.get(payload.grantId);
      if (!members) {
        members = new Set();
        this.grants.set(payload.grantId, members);
      }
      members.add(key);
    }
  }

  delete(key) {
    const entry = this.entries.get(key);
    if (!entry) return;
    this.entries.delete(key);
    const [model, id] = Store.split(key);
    const { payload } = entry;
    if (model === 'RefreshToken' && payload.grantId) {
      this.rtTombstones.set(id, payload.grantId);
      if (this.rtTombstones.size > MAX_TOMBSTONES) {
        this.rtTombstones.delete(this.rtTombstones.keys().next().value);
      }
    }
    if (payload.uid && this.sessionUids.get(payload.uid) === id) this.sessionUids.delete(payload.uid);
    if (payload.userCode && this.userCodes.get(payload.userCode) === id) this.userCodes.delete(payload.userCode);
    if (GRANTABLE.has(model) && payload.grantId) {
      const members = this.grants.get(payload.grantId);
      if (members) {
        members.delete(key);
        if (members.size === 0) this.grants.delete(payload.grantId);
      }
    }
  }

  deleteGrantMembers(grantId) {
    const members = this.grants.get(grantId);
    if (!members) return;
    for (const key of [...members]) this.delete(key);
    this.grants.delete(grantId);
  }

  sweep() {
    const now = Date.now();
    for (const [key, entry] of this.entries) {
      if (entry.expiresAt && entry.expiresAt <= now) this.delete(key);
    }
  }

  // Writes the store as JSON, chunk by chunk (it can hold hundreds of
  // thousands of entries), to file.tmp and renames it over file.
  saveSync(file, extra) {
    const tmp = `${file}.tmp`;
    fs.mkdirSync(path.dirname(file), { recursive: true });
    const fd = fs.openSync(tmp, 'w');
    try {
      const head = { version: 1, saved_at: new Date().toISOString(), ...extra };
      fs.writeSync(fd, `${JSON.stringify(head).slice(0, -1)},"entries":[\n`);
      let buf = [];
      let first = true;
      const now = Date.now();
      for (const [key, { payload, expiresAt }] of this.entries) {
        if (expiresAt && expiresAt <= now) continue;
        buf.push(`${first ? '' : ','}${JSON.stringify([key, payload, expiresAt])}\n`);
        first = false;
        if (buf.length >= 5000) {
          fs.writeSync(fd, buf.join(''));
          buf = [];
        }
      }
      if (buf.length) fs.writeSync(fd, buf.join(''));
      fs.writeSync(fd, ']}\n');
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    fs.renameSync(tmp, file);
  }

  // Loads a file written by saveSync; returns the parsed head (without entries).
  loadSync(file) {
    const state = JSON.parse(fs.readFileSync(file, 'utf8'));
    if (state.version !== 1 || !Array.isArray(state.entries)) {
      throw new Error(`${file}: not an upstream state file (version 1)`);
    }
    const now = Date.now();
    for (const [key, payload, expiresAt] of state.entries) {
      if (expiresAt && expiresAt <= now) continue;
      this.set(key, payload, expiresAt);
    }
    delete state.entries;
    return state;
  }
}

const store = new Store();

// Rotation grace (ROTATION_GRACE). tokenRequest holds, for the duration of
// one POST /token, an object where a grace reuse is noted for the stats.
const tokenRequest = new AsyncLocalStorage();

// When the refresh token becomes unusable again after its first rotation
// (ms epoch), or 0 when grace is off.
function graceUntil(payload) {
  if (ROTATION_GRACE <= 0 || !payload.consumed) return 0;
  return (payload.consumedAtMs ?? payload.consumed * 1000) + ROTATION_GRACE * 1000;
}

// What the provider sees of a consumed refresh token: within the grace
// window, and only at the token endpoint, the token as if it had not been
// used (node-oidc-provider then rotates it again); otherwise the consumed
// token, which triggers reuse detection.
function graceView(payload) {
  const req = tokenRequest.getStore();
  if (!req || Date.now() >= graceUntil(payload)) return payload;
  const { consumed, consumedAtMs, ...fresh } = payload;
  req.graceReuse = { grantId: payload.grantId, ageMs: Date.now() - (consumedAtMs ?? consumed * 1000) };
  return fresh;
}

// The node-oidc-provider adapter interface, one instance per model.
class MapAdapter {
  constructor(model) {
    this.model = model;
  }

  key(id) {
    return `${this.model}:${id}`;
  }

  async upsert(id, payload, expiresIn) {
    const expiresAt = typeof expiresIn === 'number' && expiresIn > 0 ? Date.now() + expiresIn * 1000 : 0;
    store.set(this.key(id), payload, expiresAt);
  }

  async find(id) {
    if (typeof id !== 'string') return undefined;
    const payload = store.get(this.key(id))?.payload;
    if (payload && this.model === 'RefreshToken' && payload.consumed) return graceView(payload);
    return payload;
  }

  async findByUserCode(userCode) {
    const id = store.userCodes.get(userCode);
    return id === undefined ? undefined : this.find(id);
  }

  async findByUid(uid) {
    const id = store.sessionUids.get(uid);
    return id === undefined ? undefined : this.find(id);
  }

  async consume(id) {
    const entry = store.get(this.key(id));
    if (!entry) return;
    if (ROTATION_GRACE > 0) {
      // The grace window runs from the first rotation: a reuse within it
      // rotates the token again but does not extend the window.
      if (entry.payload.consumed) return;
      entry.payload.consumedAtMs = Date.now();
    }
    entry.payload.consumed = epochTime();
  }

  async destroy(id) {
    store.delete(this.key(id));
  }

  async revokeByGrantId(grantId) {
    store.deleteGrantMembers(grantId);
  }
}

// ---------------------------------------------------------------------------
// State file (load) and signing key
// ---------------------------------------------------------------------------

let loadedJwks;
if (STATE_FILE && fs.existsSync(STATE_FILE)) {
  try {
    const head = store.loadSync(STATE_FILE);
    loadedJwks = head.jwks;
    process.stdout.write(`upstream: loaded ${store.entries.size} entries from ${STATE_FILE}\n`);
  } catch (err) {
    fail(`cannot load STATE_FILE: ${err.message}`);
  }
}

function generateJwks() {
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const jwk = privateKey.export({ format: 'jwk' });
  return {
    keys: [{
      ...jwk, kid: crypto.randomBytes(8).toString('hex'), use: 'sig', alg: 'RS256',
    }],
  };
}

// The key is generated at start; with STATE_FILE it is saved alongside the
// tokens so id_tokens stay verifiable across a restart.
const jwks = loadedJwks?.keys?.length ? loadedJwks : generateJwks();

// ---------------------------------------------------------------------------
// Test statistics
// ---------------------------------------------------------------------------

// Counter maps have no prototype: their keys come from requests.
const counters = (init = {}) => Object.assign(Object.create(null), init);

function newStats() {
  return {
    token_requests: counters({
      refresh_token: 0,
      client_credentials: 0,
      authorization_code: 0,
      [DEVICE_CODE_GRANT]: 0,
    }),
    token_errors: counters(),
    refreshes_by_grant: counters(),
    rotations_by_grant: counters(),
    grace_reuses_by_grant: counters(),
    revocations: [],
    introspections: 0,
  };
}
let stats = newStats();

const inc = (obj, key) => { obj[key] = (obj[key] || 0) + 1; };

// ---------------------------------------------------------------------------
// HTML helpers
// ---------------------------------------------------------------------------

const esc = (s) => String(s ?? '').replace(/[&<>"']/g, (c) => ({
  '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;',
}[c]));

function page(title, body) {
  return `<!DOCTYPE html>
<html>
<head><meta charset="utf-8"><title>${esc(title)}</title></head>
<body>
<h1>${esc(title)}</h1>
${body}
</body>
</html>
`;
}

// ---------------------------------------------------------------------------
// Provider
// ---------------------------------------------------------------------------

const redirectClient = {
  redirect_uris: REDIRECT_URIS,
  response_types: ['code'],
  grant_types: ['authorization_code', 'refresh_token', 'client_credentials', DEVICE_CODE_GRANT, TOKEN_EXCHANGE_GRANT],
};

const clients = [
  {
    ...redirectClient,
    client_id: 'vault-basic',
    client_secret: CLIENT_SECRET,
    token_endpoint_auth_method: 'client_secret_basic',
  },
  {
    ...redirectClient,
    client_id: 'vault-post',
    client_secret: CLIENT_SECRET,
    token_endpoint_auth_method: 'client_secret_post',
  },
  {
    ...redirectClient,
    client_id: 'vault-public',
    token_endpoint_auth_method: 'none',
    grant_types: ['authorization_code', 'refresh_token', DEVICE_CODE_GRANT],
  },
];

// CLIENT_JWKS (a JWKS with public keys) adds the client `vault-jwt`, which
// authenticates with private_key_jwt (RFC 7523) signed by the matching
// private key, held only by the test and, sealed, by Vault.
if (process.env.CLIENT_JWKS) {
  clients.push({
    ...redirectClient,
    client_id: 'vault-jwt',
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: 'ES256',
    jwks: JSON.parse(process.env.CLIENT_JWKS),
  });
}

const configuration = {
  clients,
  jwks,
  scopes: SCOPES,
  responseTypes: ['code'],
  claims: { openid: ['sub'] },

  // Account: any id exists.
  async findAccount(ctx, id) {
    return {
      accountId: id,
      async claims() { return { sub: id }; },
    };
  },

  adapter: MapAdapter,

  // Fixed (test-only) cookie signing key, so cookies survive a restart too.
  cookies: { keys: ['upstream-test-cookie-signing-key'] },

  interactions: {
    url(ctx, interaction) {
      return `/interaction/${interaction.uid}`;
    },
  },

  pkce: {
    // S256 only; mandatory for the public client, optional for confidential ones.
    methods: ['S256'],
    required: (ctx, client) => client.clientAuthMethod === 'none',
  },

  // Refresh tokens: issued when the grant has offline_access or the client may
  // use the refresh_token grant (all three test clients may); always rotated.
  issueRefreshToken: async (ctx, client, code) => code.scopes.has('offline_access')
    || client.grantTypeAllowed('refresh_token'),
  rotateRefreshToken: () => true,
  // Tokens live with their grant, not with the browser session.
  expiresWithSession: async () => false,

  ttl: {
    AccessToken: (ctx, token) => token.resourceServer?.accessTokenTTL || ACCESS_TOKEN_TTL,
    ClientCredentials: CLIENT_CREDENTIALS_TTL,
    RefreshToken: REFRESH_TOKEN_TTL,
    Grant: GRANT_TTL,
    AuthorizationCode: 60,
    DeviceCode: 600,
    IdToken: 3600,
    Interaction: 3600,
    Session: 14 * 24 * 60 * 60,
    BackchannelAuthenticationRequest: 600,
    PreAuthorizedCode: 600,
  },

  clientBasedCORS: () => true,

  // Errors for browsers as JSON too (easy to read in tests).
  async renderError(ctx, out) {
    ctx.type = 'json';
    ctx.body = out;
  },

  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    revocation: {
      enabled: true,
      // node-oidc-provider's default policy, spelled out: a client may only
      // revoke its own tokens.
      allowedPolicy(ctx, client, token) {
        if (token.clientId !== client.clientId) {
          if (client.clientAuthMethod === 'none') return false;
          throw new errors.InvalidRequest('client is not authorized to revoke the presented token');
        }
        return true;
      },
    },
    introspection: {
      enabled: true,
      // Any confidential client may introspect any token; a public client only its own.
      allowedPolicy(ctx, client, token) {
        return client.clientAuthMethod !== 'none' || token.clientId === client.clientId;
      },
    },
    deviceFlow: {
      enabled: true,
      async userCodeInputSource(ctx, form, out, err) {
        let msg = '<p>Enter the code displayed on your device</p>';
        if (err) {
          msg = `<p class="error">${esc(out?.error || 'error')}: ${esc(out?.error_description || err.message)}</p>`;
        }
        ctx.body = page('Device sign-in', `${msg}
${form}
<button type="submit" form="op.deviceInputForm">Continue</button>`);
      },
      async userCodeConfirmSource(ctx, form, client, deviceInfo, userCode) {
        ctx.body = page('Confirm device', `<p>Client <strong>${esc(client.clientId)}</strong> displays code <code>${esc(userCode)}</code>.</p>
${form}
<button type="submit" form="op.deviceConfirmForm">Continue</button>`);
      },
      async successSource(ctx) {
        ctx.body = page('Device sign-in success', `<p id="device-success">Device of client ${esc(ctx.oidc.client.clientId)} approved.</p>`);
      },
    },
    resourceIndicators: {
      enabled: true,
      // Only when a `resource` parameter is sent: any absolute URI is an
      // API accepting the api:* scopes; its access tokens are opaque too.
      defaultResource: () => undefined,
      useGrantedResource: () => true,
      getResourceServerInfo(ctx, resourceIndicator) {
        return {
          scope: API_SCOPES.join(' '),
          audience: resourceIndicator,
          accessTokenFormat: 'opaque',
          accessTokenTTL: ACCESS_TOKEN_TTL,
        };
      },
    },
    rpInitiatedLogout: {
      enabled: true,
      async logoutSource(ctx, form) {
        ctx.body = page('Logout', `${form}<button type="submit" form="op.logoutForm" name="logout" value="yes">Log out</button>`);
      },
      async postLogoutSuccessSource(ctx) {
        ctx.body = page('Logged out', '<p>Logged out.</p>');
      },
    },
  },
};

const provider = new Provider(ISSUER, configuration);

// RFC 8693 token exchange, which node-oidc-provider does not ship: an
// active access token (the subject) is traded for a new token of the
// calling client with the same or fewer scopes. The new token is a
// client-owned one, not tied to the subject's grant, so revoking it does not
// cascade to the grant (unlike revoking the subject itself).
const ACCESS_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
provider.registerGrantType(TOKEN_EXCHANGE_GRANT, async (ctx) => {
  const { subject_token: subjectToken, subject_token_type: subjectType, scope, audience } = ctx.oidc.params;
  if (!subjectToken) throw new errors.InvalidRequest('subject_token is required');
  if (subjectType !== ACCESS_TOKEN_TYPE) throw new errors.InvalidRequest('unsupported subject_token_type');
  const subject = await provider.AccessToken.find(subjectToken);
  if (!subject || subject.isExpired) throw new errors.InvalidGrant('subject_token is not an active access token');
  const held = new Set((subject.scope || '').split(' ').filter(Boolean));
  const wanted = scope ? scope.split(' ').filter(Boolean) : [...held];
  if (wanted.some((s) => !held.has(s))) throw new errors.InvalidScope('scope exceeds the subject token', scope);
  const token = new provider.ClientCredentials({ client: ctx.oidc.client, scope: wanted.join(' ') });
  if (audience) token.aud = audience;
  ctx.body = {
    access_token: await token.save(),
    issued_token_type: ACCESS_TOKEN_TYPE,
    token_type: 'Bearer',
    expires_in: token.expiration,
    scope: token.scope,
  };
}, ['subject_token', 'subject_token_type', 'requested_token_type', 'scope', 'audience', 'actor_token', 'actor_token_type']);

provider.on('server_error', (ctx, err) => {
  process.stderr.write(`upstream: server_error ${ctx?.method} ${ctx?.path}: ${err?.stack || err}\n`);
});

// Statistics middleware: runs around every provider route. Errors are turned
// into responses inside the provider's routes, so after next() ctx.status,
// ctx.body and ctx.oidc describe the outcome.
provider.use(async (ctx, next) => {
  const req = {};
  if (ROTATION_GRACE > 0 && ctx.method === 'POST' && ctx.path === '/token') {
    await tokenRequest.run(req, next);
  } else {
    await next();
  }
  const route = ctx.oidc?.route;
  if (!route) return;

  if (route === 'token') {
    const params = ctx.oidc.params || {};
    const gty = params.grant_type || ctx.request.body?.grant_type || 'missing';
    inc(stats.token_requests, gty);
    const error = ctx.status >= 400 ? (ctx.body?.error || `http_${ctx.status}`) : undefined;
    if (error) inc(stats.token_errors, error);
    if (gty === 'refresh_token') {
      const { entities } = ctx.oidc;
      // The presented token's grant (RotatedRefreshToken is the presented one
      // after a rotation); for early failures, look the presented value up in
      // the store or among the deleted refresh tokens.
      const presented = entities.RotatedRefreshToken || entities.RefreshToken;
      let grantId = presented?.grantId;
      if (!grantId && typeof params.refresh_token === 'string') {
        grantId = store.entries.get(`RefreshToken:${params.refresh_token}`)?.payload.grantId
          || store.rtTombstones.get(params.refresh_token);
      }
      if (grantId) {
        inc(stats.refreshes_by_grant, grantId);
        if (!error && entities.RotatedRefreshToken) inc(stats.rotations_by_grant, grantId);
        if (!error && req.graceReuse) {
          inc(stats.grace_reuses_by_grant, grantId);
          process.stdout.write(`upstream: grant ${grantId}: rotated refresh token reused ${req.graceReuse.ageMs}ms after its rotation, within the ${ROTATION_GRACE}s grace period\n`);
        }
      }
    }
  } else if (route === 'revocation') {
    const { entities, params } = ctx.oidc;
    const token = entities.AccessToken || entities.RefreshToken || entities.ClientCredentials;
    stats.revocations.push({
      token_type_hint: params?.token_type_hint ?? null,
      kind: token?.kind || 'unknown',
      grant_id: token?.grantId ?? null,
      client_id: ctx.oidc.client?.clientId ?? null,
      status: ctx.status,
      // Whether the presented token is gone now (false when the policy
      // refused, e.g. another client's token, or when it was unknown).
      revoked: !!token && !store.entries.has(`${token.kind}:${token.jti}`),
      at: Date.now(),
    });
  } else if (route === 'device_authorization') {
    // RFC 8628 polling interval (node-oidc-provider omits it; clients would
    // default to 5s). The server never answers slow_down.
    if (ctx.status === 200 && ctx.body && typeof ctx.body === 'object') {
      ctx.body.interval = DEVICE_POLL_INTERVAL;
    }
  } else if (route === 'introspection') {
    stats.introspections += 1;
    // RFC 7662 token_type for refresh tokens (node-oidc-provider omits it).
    if (ctx.body?.active && ctx.oidc.entities.RefreshToken && !ctx.body.token_type) {
      ctx.body.token_type = 'refresh_token';
    }
  }
});

// ---------------------------------------------------------------------------
// Small HTTP helpers for the routes served outside the provider
// ---------------------------------------------------------------------------

const MAX_BODY = 1 << 20;

function readBody(req) {
  return new Promise((resolve, reject) => {
    const chunks = [];
    let size = 0;
    req.on('data', (c) => {
      size += c.length;
      if (size > MAX_BODY) {
        reject(Object.assign(new Error('request body too large'), { status: 413 }));
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    req.on('error', reject);
  });
}

function sendJSON(res, status, body) {
  const data = JSON.stringify(body);
  res.writeHead(status, {
    'content-type': 'application/json; charset=utf-8',
    'content-length': Buffer.byteLength(data),
    'cache-control': 'no-store',
  });
  res.end(data);
}

function sendHTML(res, status, html) {
  res.writeHead(status, {
    'content-type': 'text/html; charset=utf-8',
    'content-length': Buffer.byteLength(html),
    'cache-control': 'no-store',
  });
  res.end(html);
}

class HttpError extends Error {
  constructor(status, error, description) {
    super(description || error);
    this.status = status;
    this.error = error;
    this.description = description;
  }
}

// ---------------------------------------------------------------------------
// Interactions: login + consent in one browser-less step
// ---------------------------------------------------------------------------

async function loadInteraction(req, res, uid) {
  let details;
  try {
    details = await provider.interactionDetails(req, res);
  } catch (err) {
    throw new HttpError(400, 'invalid_request', `interaction not found: ${err.error_description || err.message}`);
  }
  if (details.uid !== uid) {
    throw new HttpError(400, 'invalid_request', 'interaction cookie does not match the interaction in the URL');
  }
  return details;
}

async function handleInteraction(req, res, url) {
  const m = /^\/interaction\/([^/]+)(?:\/(login|abort))?\/?$/.exec(url.pathname);
  if (!m) throw new HttpError(404, 'not_found', 'no such interaction route');
  const [, uid, action] = m;

  if (!action && req.method === 'GET') {
    const details = await loadInteraction(req, res, uid);
    const { params, prompt } = details;
    sendHTML(res, 200, page('Sign-in', `<p>Client <strong>${esc(params.client_id)}</strong> asks for scope <code>${esc(params.scope || '')}</code> (prompt: ${esc(prompt.name)}; reasons: ${esc((prompt.reasons || []).join(', '))}).</p>
<p>Signing in here also grants every requested scope.</p>
<form method="post" action="/interaction/${esc(uid)}/login">
  <input type="text" name="login" value="${esc(params.login_hint || details.session?.accountId || '')}" placeholder="account id" autofocus>
  <button type="submit">Sign in and allow</button>
</form>
<form method="post" action="/interaction/${esc(uid)}/abort">
  <button type="submit">Deny</button>
</form>`));
    return;
  }

  if (req.method !== 'POST' || !action) {
    throw new HttpError(405, 'invalid_request', 'method not allowed');
  }

  const form = new URLSearchParams(await readBody(req));
  const details = await loadInteraction(req, res, uid);

  if (action === 'abort') {
    await provider.interactionFinished(req, res, {
      error: 'access_denied',
      error_description: 'End-User aborted interaction',
    }, { mergeWithLastSubmission: false });
    return;
  }

  const accountId = (form.get('login') || '').trim();
  if (!accountId) {
    throw new HttpError(400, 'invalid_request', 'missing login (the account id)');
  }

  const { params, prompt } = details;
  const requested = (params.scope || '').split(' ').filter((s) => SCOPES.includes(s));

  // Reuse the session's grant for this client when it belongs to the same account.
  let grant;
  if (details.grantId) {
    grant = await provider.Grant.find(details.grantId);
    if (grant && grant.accountId !== accountId) grant = undefined;
  }
  grant ||= new provider.Grant({ accountId, clientId: params.client_id });

  // Consent: everything requested (including offline_access), plus whatever
  // the consent prompt reported missing, plus every requested resource.
  if (requested.length) grant.addOIDCScope(requested.join(' '));
  const missing = prompt?.details || {};
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  if (missing.missingResourceScopes) {
    for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes)) {
      grant.addResourceScope(indicator, scopes.join(' '));
    }
  }
  const resources = [params.resource].flat().filter((r) => typeof r === 'string' && r);
  const apiScopes = requested.filter((s) => API_SCOPES.includes(s));
  for (const resource of resources) {
    if (apiScopes.length) grant.addResourceScope(resource, apiScopes.join(' '));
  }
  const grantId = await grant.save();

  await provider.interactionFinished(req, res, {
    login: { accountId },
    consent: { grantId },
  }, { mergeWithLastSubmission: false });
}

// ---------------------------------------------------------------------------
// Test-only routes
// ---------------------------------------------------------------------------

const TOKEN_MODELS = ['AccessToken', 'RefreshToken', 'ClientCredentials', 'AuthorizationCode', 'DeviceCode'];

function liveGrant(grantId, nowSec = epochTime()) {
  if (!grantId) return undefined;
  const entry = store.get(`Grant:${grantId}`);
  if (!entry) return undefined;
  if (entry.payload.exp && entry.payload.exp <= nowSec) return undefined;
  return entry.payload;
}

async function mint(body) {
  const clientId = body.client_id ?? 'vault-basic';
  const scope = body.scope ?? 'offline_access api:read api:write';
  const accountId = body.account_id ?? 'alice';
  if (typeof clientId !== 'string' || typeof scope !== 'string' || typeof accountId !== 'string' || !accountId) {
    throw new HttpError(400, 'invalid_request', 'client_id, scope and account_id must be strings');
  }
  const client = await provider.Client.find(clientId);
  if (!client) throw new HttpError(400, 'invalid_client', `unknown client_id ${clientId}`);
  const scopes = [...new Set(scope.split(' ').filter(Boolean))];
  const unknown = scopes.filter((s) => !SCOPES.includes(s));
  if (unknown.length) throw new HttpError(400, 'invalid_scope', `unknown scope(s): ${unknown.join(' ')}`);
  let expiresIn;
  if (body.refresh_token_ttl !== undefined) {
    expiresIn = Number(body.refresh_token_ttl);
    if (!Number.isSafeInteger(expiresIn) || expiresIn <= 0) {
      throw new HttpError(400, 'invalid_request', 'refresh_token_ttl must be a positive integer (seconds)');
    }
  }

  // The same Grant and RefreshToken a code exchange produces (see
  // node-oidc-provider's grant_common.js), minus the session binding.
  const grant = new provider.Grant({ accountId, clientId });
  if (scopes.length) grant.addOIDCScope(scopes.join(' '));
  const grantId = await grant.save();

  const now = epochTime();
  const rt = new provider.RefreshToken({
    accountId,
    authTime: now,
    client,
    expiresWithSession: false,
    grantId,
    gty: 'authorization_code',
    rotations: 0,
    scope: scopes.join(' ') || undefined,
    ...(expiresIn ? { expiresIn } : {}),
  });
  const refreshToken = await rt.save();
  return { refresh_token: refreshToken, grant_id: grantId };
}

function tokenInfo(value) {
  const nowSec = epochTime();
  for (const model of TOKEN_MODELS) {
    const entry = typeof value === 'string' && value ? store.get(`${model}:${value}`) : undefined;
    if (!entry) continue;
    const p = entry.payload;
    const grant = p.grantId ? liveGrant(p.grantId, nowSec) : undefined;
    const expired = !!(p.exp && p.exp <= nowSec);
    const consumed = !!p.consumed;
    const active = !expired && !consumed && (!p.grantId || !!grant);
    return {
      found: true,
      kind: model,
      active,
      grant_id: p.grantId,
      grant_found: p.grantId ? !!grant : undefined,
      scope: p.scope ?? '',
      consumed,
      // With ROTATION_GRACE: until when (ms epoch) the token endpoint still
      // accepts this consumed refresh token.
      grace_until: model === 'RefreshToken' && consumed && ROTATION_GRACE > 0 ? graceUntil(p) : undefined,
      client_id: p.clientId,
      account_id: p.accountId,
      exp: p.exp,
    };
  }
  return { found: false, active: false, consumed: false };
}

function grantInfo(grantId) {
  const grant = liveGrant(grantId);
  const tokens = counters();
  const activeTokens = counters();
  // Opaque token values are their ids: tests grep Vault's logs for every
  // refresh token the grant ever had, rotated ones included.
  const refreshTokenValues = [];
  const nowSec = epochTime();
  for (const key of store.grants.get(grantId) || []) {
    const entry = store.get(key);
    if (!entry) continue;
    const [model, id] = Store.split(key);
    if (model === 'RefreshToken') refreshTokenValues.push(id);
    inc(tokens, model);
    if (!entry.payload.consumed && !(entry.payload.exp && entry.payload.exp <= nowSec)) inc(activeTokens, model);
  }
  return {
    found: !!grant,
    client_id: grant?.clientId,
    account_id: grant?.accountId,
    scope: grant?.openid?.scope ?? '',
    resources: grant?.resources,
    tokens,
    active_tokens: activeTokens,
    refresh_token_values: refreshTokenValues,
  };
}

async function handleTest(req, res, url) {
  const route = `${req.method} ${url.pathname.replace(/\/+$/, '')}`;
  switch (route) {
    case 'POST /test/mint': {
      const raw = await readBody(req);
      let body = {};
      if (raw.trim()) {
        try {
          body = JSON.parse(raw);
        } catch {
          throw new HttpError(400, 'invalid_request', 'body must be JSON');
        }
      }
      if (!body || typeof body !== 'object' || Array.isArray(body)) {
        throw new HttpError(400, 'invalid_request', 'body must be a JSON object');
      }
      sendJSON(res, 200, await mint(body));
      return;
    }
    case 'GET /test/stats':
      sendJSON(res, 200, stats);
      return;
    case 'POST /test/reset-stats':
      await readBody(req);
      stats = newStats();
      sendJSON(res, 200, { ok: true });
      return;
    case 'GET /test/token':
      sendJSON(res, 200, tokenInfo(url.searchParams.get('value')));
      return;
    case 'GET /test/grant':
      sendJSON(res, 200, grantInfo(url.searchParams.get('id') || ''));
      return;
    case 'GET /test/health':
      sendJSON(res, 200, {
        ok: true, issuer: ISSUER, entries: store.entries.size, grants: store.grants.size, rotation_grace: ROTATION_GRACE,
      });
      return;
    default:
      throw new HttpError(404, 'not_found', `no test route ${route}`);
  }
}

// ---------------------------------------------------------------------------
// HTTP server
// ---------------------------------------------------------------------------

const providerCallback = provider.callback();

// Plain OAuth (no openid): node-oidc-provider drops offline_access from an
// authorization request unless prompt=consent is present (an OIDC rule). A
// plain OAuth client does not know about prompt, so add prompt=consent to
// GET /auth requests that ask for offline_access without openid and without a
// prompt. Requests with openid keep the OIDC rule.
function plainOAuthOfflineShim(req, url) {
  if (req.method !== 'GET' || url.pathname !== '/auth') return;
  const q = url.searchParams;
  const scopes = (q.get('scope') || '').split(' ');
  if (scopes.includes('offline_access') && !scopes.includes('openid') && !q.has('prompt')) {
    q.set('prompt', 'consent');
    req.url = `${url.pathname}?${q.toString()}`;
  }
}

const server = http.createServer(async (req, res) => {
  if (REQUEST_LOG) {
    const t0 = process.hrtime.bigint();
    const { method, url: rawUrl } = req;
    res.on('finish', () => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      process.stdout.write(`upstream: ${method} ${rawUrl.split('?')[0]} ${res.statusCode} ${ms.toFixed(1)}ms\n`);
    });
  }
  let url;
  try {
    url = new URL(req.url, BASE_URL);
  } catch {
    sendJSON(res, 400, { error: 'invalid_request', error_description: 'bad request URL' });
    return;
  }
  try {
    if (url.pathname.startsWith('/test/')) {
      await handleTest(req, res, url);
      return;
    }
    if (url.pathname.startsWith('/interaction/')) {
      await handleInteraction(req, res, url);
      return;
    }
    plainOAuthOfflineShim(req, url);
    providerCallback(req, res);
  } catch (err) {
    const status = err.status || 500;
    if (status >= 500) process.stderr.write(`upstream: ${req.method} ${url.pathname}: ${err.stack || err}\n`);
    if (res.headersSent) {
      res.destroy();
      return;
    }
    sendJSON(res, status, {
      error: err.error || (status >= 500 ? 'server_error' : 'invalid_request'),
      error_description: err.description || err.message,
    });
  }
});

// Keep idle keep-alive connections for 65s (Node's default is 5s), so a Go
// client reusing a pooled connection rarely races the server closing it.
server.keepAliveTimeout = 65_000;
server.headersTimeout = 66_000;

const sweeper = setInterval(() => store.sweep(), 30_000);
sweeper.unref();

let stopping = false;
function shutdown(signal) {
  if (stopping) return;
  stopping = true;
  let code = 0;
  if (STATE_FILE) {
    try {
      store.saveSync(STATE_FILE, { issuer: ISSUER, jwks });
      process.stdout.write(`upstream: ${signal}: saved ${store.entries.size} entries to ${STATE_FILE}\n`);
    } catch (err) {
      process.stderr.write(`upstream: ${signal}: cannot save STATE_FILE: ${err.stack || err}\n`);
      code = 1;
    }
  }
  server.close();
  server.closeAllConnections?.();
  process.exit(code);
}
process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));

server.on('error', (err) => fail(`cannot listen on ${HOST}:${PORT}: ${err.message}`));
server.listen(PORT, HOST, () => {
  process.stdout.write(`upstream listening on ${BASE_URL}\n`);
});

// panva `oidc-provider` (npm, pinned in package.json; a certified OpenID Connect
// provider) configured as the SMART authorization server in front of the gateway, for
// scripts/interop.sh.
//
// What is configured here, and nothing else is changed in the provider:
// - clients: `portico-portal` (confidential, client_secret_basic; the gateway's portal
//   login), `demo-app` (public, PKCE), `portico-system` (client_credentials with a
//   secret) and `portico-system-jwt` (client_credentials with private_key_jwt, RS384);
// - PKCE required; refresh tokens for clients allowed the refresh_token grant;
// - JWT access tokens (only issued with the `resourceIndicators` feature) for the one
//   resource server, the gateway's /fhir (the default resource: SMART apps send `aud`,
//   not `resource`), carrying `scope` and, for patient logins, `patient` and `fhirUser`;
// - the token response names the `patient` too (SMART launch context);
// - login and consent: the provider redirects to /interaction/:uid, handled below. A
//   request with `login_hint` naming a known patient logs in without a form (like the
//   sandbox's auto-approval); otherwise a form posts `login` to /interaction/:uid/login.
//   Consent grants exactly what was asked.
//
//   node tests/interop/oidc-provider.mjs --port 8097 --resource http://127.0.0.1:8080/fhir \
//     --patients pat-1,pat-2,pat-3 --gateway-callback http://127.0.0.1:8080/auth/callback \
//     --out-dir DIR
//
// --out-dir receives portal.secret, system.secret and system-jwt.pem (the private key
// of portico-system-jwt, for the gateway's backend_services upstream auth).

import crypto from 'node:crypto';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';
import { parseArgs } from 'node:util';
import Provider, { errors } from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string', default: '8097' },
    resource: { type: 'string' },
    patients: { type: 'string', default: 'pat-1,pat-2,pat-3' },
    'gateway-callback': { type: 'string' },
    'out-dir': { type: 'string' },
  },
});
const port = Number.parseInt(args.port, 10);
const issuer = `http://127.0.0.1:${port}`;
const resource = args.resource.replace(/\/$/, '');
const patients = new Set(args.patients.split(','));
const out = args['out-dir'];
fs.mkdirSync(out, { recursive: true });

const secret = () => crypto.randomBytes(32).toString('base64url');
const portalSecret = secret();
const systemSecret = secret();
fs.writeFileSync(path.join(out, 'portal.secret'), portalSecret, { mode: 0o600 });
fs.writeFileSync(path.join(out, 'system.secret'), systemSecret, { mode: 0o600 });

// The provider's own signing key, and the key pair of the private_key_jwt client.
const signing = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
const signingJwk = { ...signing.privateKey.export({ format: 'jwk' }), kid: 'oidc-1', use: 'sig', alg: 'RS256' };
const client = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
fs.writeFileSync(path.join(out, 'system-jwt.pem'), client.privateKey.export({ format: 'pem', type: 'pkcs8' }), {
  mode: 0o600,
});
const clientJwk = { ...client.publicKey.export({ format: 'jwk' }), kid: 'portico-system-jwt', use: 'sig', alg: 'RS384' };

const SMART_SCOPES = [
  'patient/*.rs', 'patient/*.read', 'patient/*.cud', 'patient/*.write', 'patient/*.*', 'patient/*.cruds',
  'system/*.read', 'system/*.write', 'system/*.rs', 'system/*.cruds', 'system/*.*',
].join(' ');

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: 'portico-portal',
      client_secret: portalSecret,
      redirect_uris: [args['gateway-callback']],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    {
      client_id: 'demo-app',
      token_endpoint_auth_method: 'none',
      redirect_uris: ['http://127.0.0.1:9/callback'],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
    },
    {
      client_id: 'portico-system',
      client_secret: systemSecret,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    {
      client_id: 'portico-system-jwt',
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: [],
      token_endpoint_auth_method: 'private_key_jwt',
      token_endpoint_auth_signing_alg: 'RS384',
      jwks: { keys: [clientJwk] },
    },
  ],
  jwks: { keys: [signingJwk] },
  enabledJWA: { clientAuthSigningAlgValues: ['RS256', 'RS384', 'ES384', 'PS256'] },
  pkce: { required: () => true },
  scopes: ['openid', 'offline_access', 'fhirUser', 'launch/patient', 'online_access'],
  claims: { openid: ['sub'], fhirUser: ['fhirUser'] },
  interactions: { url: (_ctx, interaction) => `/interaction/${interaction.uid}` },
  findAccount: async (_ctx, id) =>
    patients.has(id) ? { accountId: id, claims: async () => ({ sub: id, fhirUser: `Patient/${id}` }) } : undefined,
  extraTokenClaims: async (_ctx, token) =>
    token.accountId ? { patient: token.accountId, fhirUser: `Patient/${token.accountId}` } : undefined,
  issueRefreshToken: async (_ctx, c, source) =>
    c.grantTypeAllowed('refresh_token') && (source.scopes.has('offline_access') || source.kind === 'AuthorizationCode'),
  features: {
    devInteractions: { enabled: false },
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: async () => resource,
      useGrantedResource: async () => true,
      getResourceServerInfo: async (_ctx, indicator) => {
        if (indicator.replace(/\/$/, '') !== resource) throw new errors.InvalidTarget();
        return { scope: SMART_SCOPES, audience: resource, accessTokenFormat: 'jwt', jwt: { sign: { alg: 'RS256' } } };
      },
    },
  },
  ttl: { AccessToken: 3600, ClientCredentials: 3600, RefreshToken: 86400 },
});

// SMART: the token response names the patient in context (the JWT carries it too).
provider.use(async (ctx, next) => {
  await next();
  if (ctx.path === '/token' && ctx.body && typeof ctx.body.access_token === 'string') {
    try {
      const claims = JSON.parse(Buffer.from(ctx.body.access_token.split('.')[1], 'base64url').toString());
      if (claims.patient) ctx.body.patient = claims.patient;
    } catch {
      // an opaque token: nothing to add
    }
  }
});

function page(res, status, html) {
  res.writeHead(status, { 'Content-Type': 'text/html; charset=utf-8' });
  res.end(html);
}

async function login(req, res, accountId) {
  await provider.interactionFinished(req, res, { login: { accountId } }, { mergeWithLastSubmission: false });
}

async function consent(req, res, details) {
  const { prompt, params, session, grantId } = details;
  const grant = grantId
    ? await provider.Grant.find(grantId)
    : new provider.Grant({ accountId: session.accountId, clientId: params.client_id });
  const missing = prompt.details;
  if (missing.missingOIDCScope) grant.addOIDCScope(missing.missingOIDCScope.join(' '));
  if (missing.missingOIDCClaims) grant.addOIDCClaims(missing.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(missing.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(' '));
  }
  const id = await grant.save();
  await provider.interactionFinished(req, res, { consent: { grantId: id } }, { mergeWithLastSubmission: true });
}

async function interaction(req, res, uid, action) {
  const details = await provider.interactionDetails(req, res);
  if (details.uid !== uid) return page(res, 400, 'interaction mismatch');
  if (details.prompt.name === 'login') {
    if (action === 'login' && req.method === 'POST') {
      const chunks = [];
      for await (const c of req) chunks.push(c);
      const who = new URLSearchParams(Buffer.concat(chunks).toString()).get('login');
      if (!patients.has(who)) return page(res, 401, 'unknown patient');
      return login(req, res, who);
    }
    const hint = details.params.login_hint;
    if (hint && patients.has(hint)) return login(req, res, hint);
    return page(
      res,
      200,
      `<form method="post" action="/interaction/${uid}/login"><input name="login"><button>Log in</button></form>`
    );
  }
  if (details.prompt.name === 'consent') return consent(req, res, details);
  return page(res, 400, `unsupported prompt ${details.prompt.name}`);
}

const callback = provider.callback();
const server = http.createServer((req, res) => {
  const m = /^\/interaction\/([^/?]+)(?:\/(login))?/.exec(req.url);
  if (!m) return callback(req, res);
  interaction(req, res, m[1], m[2]).catch((err) => {
    console.error('interaction failed:', err.message);
    if (!res.headersSent) page(res, 400, 'interaction failed');
  });
});
server.listen(port, '127.0.0.1', () => console.error(`oidc-provider: issuer ${issuer}`));
process.on('SIGTERM', () => server.close(() => process.exit(0)));

// A real OpenID Connect provider (npm `oidc-provider`) on 127.0.0.1 that stands in for the
// national eID in Sijill's integration tests.
//
//   node provider.mjs --redirect-uri URI --client-secret SECRET [--tls-cert PEM --tls-key PEM]
//
// It prints `issuer http(s)://127.0.0.1:PORT` once it listens (HTTPS with --tls-cert). A person signs in with their
// national identifier as the login; the ID token carries it in the `national_id` claim.
//
// To test the relying party's checks, `POST /test/id-token-mode` with a mode as the body
// makes the token endpoint return a doctored ID token (signed with the provider's own key
// unless the mode is about the signature): honest, wrong-issuer, expired, wrong-audience,
// foreign-key, alg-none, hmac-public-key, tampered, replay (the previous login's token).

import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { createServer as createTlsServer } from 'node:https';
import { createHmac } from 'node:crypto';
import Provider from 'oidc-provider';
import * as jose from 'jose';

function argument(name, fallback) {
  const at = process.argv.indexOf(`--${name}`);
  return at > 0 ? process.argv[at + 1] : fallback;
}

const redirectUri = argument('redirect-uri');
const clientSecret = argument('client-secret', 'eid-test-secret');
const clientId = argument('client-id', 'sijill');
if (!redirectUri) {
  console.error('--redirect-uri is required');
  process.exit(2);
}

const KID = 'eid-test-key';
const { privateKey } = await jose.generateKeyPair('ES256', { extractable: true });
const privateJwk = { ...(await jose.exportJWK(privateKey)), kid: KID, alg: 'ES256', use: 'sig' };
const publicJwk = { kty: privateJwk.kty, crv: privateJwk.crv, x: privateJwk.x, y: privateJwk.y, kid: KID };

const tlsCert = argument('tls-cert');
const server = tlsCert
  ? createTlsServer({ cert: readFileSync(tlsCert), key: readFileSync(argument('tls-key')) })
  : createServer();
await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
const issuer = `${tlsCert ? 'https' : 'http'}://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: clientId,
    client_secret: clientSecret,
    redirect_uris: [redirectUri],
    grant_types: ['authorization_code'],
    response_types: ['code'],
    id_token_signed_response_alg: 'ES256',
  }],
  jwks: { keys: [privateJwk] },
  claims: { openid: ['sub', 'national_id'] },
  conformIdTokenClaims: false,
  pkce: { required: () => true },
  // The eID is first-party: no consent screen, the grant covers what was asked.
  loadExistingGrant: async (ctx) => {
    const grant = new ctx.oidc.provider.Grant({
      clientId: ctx.oidc.client.clientId,
      accountId: ctx.oidc.session.accountId,
    });
    grant.addOIDCScope('openid');
    grant.addOIDCClaims(['national_id']);
    await grant.save();
    return grant;
  },
  findAccount: async (_ctx, id) => ({
    accountId: id,
    claims: async () => ({ sub: `person-${id}`, national_id: id }),
  }),
  ttl: { IdToken: 300, AuthorizationCode: 60, Session: 600, Interaction: 600, Grant: 600 },
});

let mode = 'honest';
let previous = null;

const b64 = (value) => Buffer.from(JSON.stringify(value)).toString('base64url');
const parts = (token) => token.split('.').map((p, i) => (i < 2 ? JSON.parse(Buffer.from(p, 'base64url')) : p));
const sign = (header, payload) => new jose.SignJWT(payload).setProtectedHeader(header).sign(privateKey);

async function doctor(token) {
  const [header, payload, signature] = parts(token);
  const now = Math.floor(Date.now() / 1000);
  switch (mode) {
    case 'wrong-issuer': return sign(header, { ...payload, iss: 'http://127.0.0.1:1/not-the-eid' });
    case 'expired': return sign(header, { ...payload, iat: now - 7200, exp: now - 3600 });
    case 'wrong-audience': return sign(header, { ...payload, aud: 'another-relying-party' });
    case 'foreign-key': {
      const { privateKey: other } = await jose.generateKeyPair('ES256');
      return new jose.SignJWT(payload).setProtectedHeader(header).sign(other);
    }
    case 'alg-none': return `${b64({ alg: 'none', kid: KID })}.${b64(payload)}.`;
    case 'hmac-public-key': {
      const head = `${b64({ alg: 'HS256', kid: KID, typ: 'JWT' })}.${b64(payload)}`;
      const mac = createHmac('sha256', JSON.stringify(publicJwk)).update(head).digest('base64url');
      return `${head}.${mac}`;
    }
    case 'tampered': return `${b64(header)}.${b64({ ...payload, national_id: 'ZZ999999' })}.${signature}`;
    case 'replay': return previous ?? token;
    default: return token;
  }
}

provider.use(async (ctx, next) => {
  if (ctx.path === '/test/id-token-mode' && ctx.method === 'POST') {
    let body = '';
    for await (const chunk of ctx.req) body += chunk;
    mode = body.trim() || 'honest';
    ctx.status = 204;
    return;
  }
  await next();
  if (ctx.path === '/token' && ctx.status === 200 && ctx.body && typeof ctx.body.id_token === 'string') {
    const honest = ctx.body.id_token;
    ctx.body = { ...ctx.body, id_token: await doctor(honest) };
    if (mode === 'honest') previous = honest;
  }
});

server.on('request', provider.callback());
console.log(`issuer ${issuer}`);

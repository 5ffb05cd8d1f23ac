// OAuth 2.0 authorization server for tower-client-credentials interop tests.
//
// Built on oidc-provider (pinned in package.json). Listens on 127.0.0.1 only.
// stdout carries exactly one line, `READY <issuer-url>`, once the server is
// listening; everything else goes to stderr. See README.md in this folder.
//
// Environment:
//   PORT                 port to listen on, 0 (default) = pick a free one
//   TOKEN_TTL            lifetime in seconds of urn:tcc:api (JWT) tokens, default 2, minimum 1
//   OPAQUE_TOKEN_TTL     lifetime in seconds of urn:tcc:opaque tokens, default 300, minimum 1
//   SIGNING_ALG          ES256 (default) or RS256: key generated at startup, signs JWT access tokens
//   PKJWT_JWKS           JSON JWKS string with pkjwt-client's public key(s) (the tests make
//                        the key pair and pass it); unset: a P-256 key generated at startup
//                        whose private half nobody has, so pkjwt-client cannot authenticate
//   DPOP_NONCE           unset/0: no DPoP nonces; 1: nonces required (use_dpop_nonce);
//                        optional: nonces issued in DPoP-Nonce headers but not required
//   EXIT_ON_STDIN_CLOSE  1 (default): exit when stdin reaches EOF (parent died); 0: ignore stdin
//   STRICT_CLIENT_AUTH   1: reject (401 invalid_client) a client_secret_basic client that sends its
//                        secret in the body, and a client_secret_post client that uses Basic.
//                        Default 0: oidc-provider accepts either for both methods.
//   LOG_REQUESTS         1: one stderr line per request, plus error details (off by default, so
//                        that a parent that never drains a piped stderr cannot make the server block)
//   MTLS_CERT, MTLS_KEY  paths of the PEM certificate and key of an HTTPS listener on 127.0.0.1
//                        (another free port) for mutual TLS (RFC 8705); unset: no mTLS at all.
//                        The listener asks for a client certificate and accepts any (the provider
//                        decides); the metadata names its token endpoint in mtls_endpoint_aliases.
//   MTLS_CA              path of the PEM CA that issues tls_client_auth certificates
//   MTLS_SUBJECT_DN      mtls-client's tls_client_auth_subject_dn (one RDN, e.g. CN=tcc-mtls-client)
//   MTLS_SELF_SIGNED_CERT  path of mtls-self-signed-client's registered certificate (PEM, P-256)

import * as crypto from 'node:crypto';
import { readFileSync } from 'node:fs';
import * as http from 'node:http';
import * as https from 'node:https';

// oidc-provider prints its notices with console.info, i.e. to stdout. stdout is
// reserved for the READY line, so route every console method to stderr.
for (const method of ['log', 'info', 'debug']) {
  console[method] = console.error;
}

const { default: Provider, errors } = await import('oidc-provider');

function fail(message) {
  process.stderr.write(`interop-as: ${message}\n`);
  process.exit(2);
}

function envSeconds(name, fallback) {
  const raw = process.env[name];
  if (raw === undefined || raw === '') return fallback;
  if (!/^-?\d+$/.test(raw.trim())) fail(`${name} must be an integer number of seconds, got ${JSON.stringify(raw)}`);
  const value = Number.parseInt(raw, 10);
  if (value < 1) {
    process.stderr.write(`interop-as: ${name}=${raw} raised to the minimum of 1 second\n`);
    return 1;
  }
  return value;
}

const PORT = (() => {
  const raw = process.env.PORT ?? '0';
  if (!/^\d+$/.test(raw) || Number(raw) > 65535) fail(`PORT must be 0..65535, got ${JSON.stringify(raw)}`);
  return Number(raw);
})();
const TOKEN_TTL = envSeconds('TOKEN_TTL', 2);
const OPAQUE_TOKEN_TTL = envSeconds('OPAQUE_TOKEN_TTL', 300);
const SIGNING_ALG = process.env.SIGNING_ALG || 'ES256';
if (!['ES256', 'RS256'].includes(SIGNING_ALG)) fail(`SIGNING_ALG must be ES256 or RS256, got ${JSON.stringify(SIGNING_ALG)}`);
const DPOP_NONCE = process.env.DPOP_NONCE || '0';
if (!['0', '1', 'optional'].includes(DPOP_NONCE)) fail(`DPOP_NONCE must be 0, 1 or optional, got ${JSON.stringify(DPOP_NONCE)}`);
const EXIT_ON_STDIN_CLOSE = (process.env.EXIT_ON_STDIN_CLOSE ?? '1') !== '0';
const STRICT_CLIENT_AUTH = process.env.STRICT_CLIENT_AUTH === '1';
const LOG_REQUESTS = process.env.LOG_REQUESTS === '1';
const MTLS = (() => {
  if (!process.env.MTLS_CERT) return undefined;
  const read = (name) => {
    const path = process.env[name];
    if (!path) fail(`MTLS_CERT is set, so ${name} must be too`);
    try {
      return readFileSync(path, 'utf8');
    } catch (err) {
      return fail(`${name}: ${err.message}`);
    }
  };
  const subjectDn = process.env.MTLS_SUBJECT_DN;
  if (!subjectDn || subjectDn.includes(',')) fail('MTLS_SUBJECT_DN must be one RDN such as CN=tcc-mtls-client');
  return {
    cert: read('MTLS_CERT'),
    key: read('MTLS_KEY'),
    ca: read('MTLS_CA'),
    subjectDn,
    selfSigned: new crypto.X509Certificate(read('MTLS_SELF_SIGNED_CERT')),
  };
})();

// ---------------------------------------------------------------------------
// Keys

// The authorization server's signing key, generated at startup. Published at
// /jwks; JWT access tokens carry its kid in their header.
function generateSigningJwk(alg) {
  const { privateKey } = alg === 'RS256'
    ? crypto.generateKeyPairSync('rsa', { modulusLength: 2048 })
    : crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const jwk = privateKey.export({ format: 'jwk' });
  const thumbprintInput = alg === 'RS256'
    ? { e: jwk.e, kty: jwk.kty, n: jwk.n }
    : { crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y };
  const kid = crypto.hash('sha256', JSON.stringify(thumbprintInput), 'base64url');
  return { ...jwk, kid, alg, use: 'sig' };
}
const signingJwk = generateSigningJwk(SIGNING_ALG);

// pkjwt-client's public key(s).
const PKJWT_JWKS = (() => {
  if (process.env.PKJWT_JWKS) {
    try {
      const jwks = JSON.parse(process.env.PKJWT_JWKS);
      if (!Array.isArray(jwks?.keys)) throw new Error('no "keys" array');
      return jwks;
    } catch (err) {
      return fail(`PKJWT_JWKS is not a JSON JWKS: ${err.message}`);
    }
  }
  const { publicKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
  return { keys: [{ ...publicKey.export({ format: 'jwk' }), kid: 'tcc-pkjwt-es256-1', alg: 'ES256', use: 'sig' }] };
})();

// ---------------------------------------------------------------------------
// Resource servers

const API_SCOPE = 'api:read api:write';
const RESOURCE_JWT = 'urn:tcc:api';
const RESOURCE_OPAQUE = 'urn:tcc:opaque';

const RESOURCE_SERVERS = {
  [RESOURCE_JWT]: {
    audience: RESOURCE_JWT,
    scope: API_SCOPE,
    accessTokenTTL: TOKEN_TTL,
    accessTokenFormat: 'jwt',
    jwt: { sign: { alg: SIGNING_ALG } },
  },
  [RESOURCE_OPAQUE]: {
    audience: RESOURCE_OPAQUE,
    scope: API_SCOPE,
    accessTokenTTL: OPAQUE_TOKEN_TTL,
    accessTokenFormat: 'opaque',
  },
};

// ---------------------------------------------------------------------------
// Clients

const common = {
  grant_types: ['client_credentials'],
  response_types: [],
  redirect_uris: [],
  scope: API_SCOPE,
};

const clients = [
  {
    ...common,
    client_id: 'basic-client',
    client_secret: 'basic-secret-0123456789',
    token_endpoint_auth_method: 'client_secret_basic',
  },
  {
    ...common,
    client_id: 'post-client',
    client_secret: 'post-secret-0123456789',
    token_endpoint_auth_method: 'client_secret_post',
  },
  {
    ...common,
    client_id: 'awkward-client',
    // oidc-provider 9.13 imposes no minimum secret length: this is the whole secret.
    client_secret: 'p@ss w+rd:/%?&=',
    token_endpoint_auth_method: 'client_secret_basic',
  },
  {
    ...common,
    client_id: 'narrow-client',
    client_secret: 'narrow-secret-0123456789',
    token_endpoint_auth_method: 'client_secret_basic',
    scope: 'api:read',
  },
  {
    ...common,
    client_id: 'jwt-secret-client',
    // 64 ASCII characters, used as the HS256 key for client_assertion JWTs.
    client_secret: 'jwt-secret-client-hs256-key-0123456789abcdef0123456789abcdef0123',
    token_endpoint_auth_method: 'client_secret_jwt',
    token_endpoint_auth_signing_alg: 'HS256',
  },
  {
    ...common,
    client_id: 'pkjwt-client',
    token_endpoint_auth_method: 'private_key_jwt',
    token_endpoint_auth_signing_alg: 'ES256',
    jwks: PKJWT_JWKS,
  },
  {
    ...common,
    client_id: 'dpop-client',
    client_secret: 'dpop-secret-0123456789',
    token_endpoint_auth_method: 'client_secret_basic',
    dpop_bound_access_tokens: true,
  },
  ...(MTLS ? [
    {
      ...common,
      client_id: 'mtls-client',
      token_endpoint_auth_method: 'tls_client_auth',
      tls_client_auth_subject_dn: MTLS.subjectDn,
      tls_client_certificate_bound_access_tokens: true,
    },
    {
      ...common,
      client_id: 'mtls-self-signed-client',
      token_endpoint_auth_method: 'self_signed_tls_client_auth',
      tls_client_certificate_bound_access_tokens: true,
      jwks: {
        keys: [{
          ...MTLS.selfSigned.publicKey.export({ format: 'jwk' }),
          x5c: [MTLS.selfSigned.raw.toString('base64')],
        }],
      },
    },
  ] : []),
];

// The peer certificate of an HTTPS request (PEM), or undefined.
function peerCertificate(ctx) {
  const peer = ctx.socket?.getPeerCertificate?.();
  if (!peer?.raw) return undefined;
  return new crypto.X509Certificate(peer.raw).toString();
}

// ---------------------------------------------------------------------------
// Provider configuration

const ttlFor = (_ctx, token) => token.resourceServer?.accessTokenTTL ?? TOKEN_TTL;

function configuration(mtlsOrigin) {
  return {
    clients,
    jwks: { keys: [signingJwk] },
    scopes: ['api:read', 'api:write'],
    clientAuthMethods: [
      'client_secret_basic', 'client_secret_post', 'client_secret_jwt', 'private_key_jwt',
      ...(MTLS ? ['tls_client_auth', 'self_signed_tls_client_auth'] : []),
    ],
    ...(MTLS ? { discovery: { mtls_endpoint_aliases: { token_endpoint: `${mtlsOrigin}/token` } } } : {}),
    clientDefaults: {
      grant_types: ['client_credentials'],
      response_types: [],
      id_token_signed_response_alg: SIGNING_ALG,
    },
    cookies: { keys: [crypto.randomBytes(32).toString('base64url')] },
    ttl: {
      AccessToken: ttlFor,
      ClientCredentials: ttlFor,
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: {
        enabled: true,
        // Same as the library default, spelled out: any authenticated (confidential)
        // client may introspect any client's opaque token.
        allowedPolicy: async () => true,
      },
      revocation: {
        enabled: true,
        // Same as the library default, spelled out: a client may revoke only its own tokens.
        allowedPolicy: async (_ctx, client, token) => {
          if (token.clientId !== client.clientId) {
            throw new errors.InvalidRequest('client is not authorized to revoke the presented token');
          }
          return true;
        },
      },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx, _client, oneOf) => oneOf ?? RESOURCE_JWT,
        getResourceServerInfo: async (_ctx, resourceIndicator) => {
          const info = RESOURCE_SERVERS[resourceIndicator];
          if (!info) throw new errors.InvalidTarget();
          return structuredClone(info);
        },
      },
      dPoP: {
        enabled: true,
        ...(DPOP_NONCE !== '0' ? { nonceSecret: crypto.randomBytes(32) } : {}),
        requireNonce: () => DPOP_NONCE === '1',
      },
      mTLS: {
        enabled: MTLS !== undefined,
        certificateBoundAccessTokens: true,
        tlsClientAuth: true,
        selfSignedTlsClientAuth: true,
        getCertificate: peerCertificate,
        // Verified against MTLS_CA by the TLS listener (which lets unverified ones through).
        certificateAuthorized: (ctx) => ctx.socket?.authorized === true,
        certificateSubjectMatches: (ctx, property, expected) => {
          if (property !== 'tls_client_auth_subject_dn') return false;
          const pem = peerCertificate(ctx);
          return pem !== undefined && new crypto.X509Certificate(pem).subject === expected;
        },
      },
    },
  };
}

// ---------------------------------------------------------------------------
// Optional strict check of client_secret_basic vs client_secret_post

const CLIENT_AUTH_PATHS = new Set(['/token', '/token/introspection', '/token/revocation']);
const BODY_LIMIT = 56 * 1024; // the same limit oidc-provider applies

async function readBody(req) {
  const chunks = [];
  let size = 0;
  for await (const chunk of req) {
    size += chunk.length;
    if (size > BODY_LIMIT) throw new Error('request entity too large');
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

// Same decoding as oidc-provider's client_secret_basic parsing.
function basicClientId(authorization) {
  const [scheme, value] = authorization.split(' ');
  if (scheme?.toLowerCase() !== 'basic' || !value) return undefined;
  const decoded = Buffer.from(value, 'base64').toString('utf8');
  const i = decoded.indexOf(':');
  if (i === -1) return undefined;
  try {
    return decodeURIComponent(decoded.slice(0, i).replace(/\+/g, '%20'));
  } catch {
    return undefined;
  }
}

function strictClientAuth(provider) {
  return async function strictClientAuthMiddleware(ctx, next) {
    if (ctx.method !== 'POST' || !CLIENT_AUTH_PATHS.has(ctx.path) || !ctx.is('application/x-www-form-urlencoded')) {
      return next();
    }
    let raw;
    try {
      raw = await readBody(ctx.req);
    } catch {
      ctx.status = 400;
      ctx.body = { error: 'invalid_request', error_description: 'failed to parse the request body' };
      return undefined;
    }
    // oidc-provider parses an already-read body from req.body (and warns once on stderr).
    ctx.req.body = raw;
    const params = new URLSearchParams(raw);
    let used;
    let clientId;
    if (ctx.headers.authorization !== undefined) {
      used = 'client_secret_basic';
      clientId = basicClientId(ctx.headers.authorization);
    } else if (params.get('client_secret')) {
      used = 'client_secret_post';
      clientId = params.get('client_id') ?? undefined;
    }
    if (used && clientId) {
      const client = await provider.Client.find(clientId).catch(() => undefined);
      const registered = client?.clientAuthMethod;
      if (['client_secret_basic', 'client_secret_post'].includes(registered) && registered !== used) {
        if (LOG_REQUESTS) {
          process.stderr.write(`interop-as: STRICT_CLIENT_AUTH: ${clientId} is registered for ${registered} but used ${used}\n`);
        }
        ctx.status = 401;
        ctx.set('cache-control', 'no-store');
        if (used === 'client_secret_basic') {
          ctx.set('www-authenticate', `Basic realm="${provider.issuer}", error="invalid_client", error_description="client authentication failed"`);
        }
        ctx.body = { error: 'invalid_client', error_description: 'client authentication failed' };
        return undefined;
      }
    }
    return next();
  };
}

// ---------------------------------------------------------------------------
// HTTP server: bind first (the issuer needs the port), then build the provider.

let handler = (_req, res) => {
  res.statusCode = 503;
  res.end();
};
const server = http.createServer((req, res) => handler(req, res));
const mtlsServer = MTLS && https.createServer({
  cert: MTLS.cert,
  key: MTLS.key,
  ca: MTLS.ca,
  requestCert: true,
  rejectUnauthorized: false,
}, (req, res) => handler(req, res));

let shuttingDown = false;
function shutdown(reason) {
  if (shuttingDown) return;
  shuttingDown = true;
  process.stderr.write(`interop-as: shutting down (${reason})\n`);
  server.close(() => process.exit(0));
  server.closeAllConnections();
  mtlsServer?.close();
  mtlsServer?.closeAllConnections();
  setTimeout(() => process.exit(0), 1000).unref();
}

process.on('SIGTERM', () => shutdown('SIGTERM'));
process.on('SIGINT', () => shutdown('SIGINT'));
if (EXIT_ON_STDIN_CLOSE) {
  process.stdin.on('end', () => shutdown('stdin closed'));
  process.stdin.on('close', () => shutdown('stdin closed'));
  process.stdin.on('error', () => shutdown('stdin error'));
  process.stdin.resume();
}

server.on('error', (err) => fail(`cannot listen on 127.0.0.1:${PORT}: ${err.message}`));
mtlsServer?.on('error', (err) => fail(`cannot listen for mTLS on 127.0.0.1: ${err.message}`));

// The mTLS listener first (on any free port), for the metadata to name it.
const mtlsListening = new Promise((resolve) => {
  if (!mtlsServer) return resolve(undefined);
  return mtlsServer.listen(0, '127.0.0.1', () => resolve(`https://127.0.0.1:${mtlsServer.address().port}`));
});

server.listen(PORT, '127.0.0.1', async () => {
  const { port } = server.address();
  const issuer = `http://127.0.0.1:${port}`;
  const mtlsOrigin = await mtlsListening;

  const provider = new Provider(issuer, configuration(mtlsOrigin));

  provider.on('server_error', (ctx, err) => {
    process.stderr.write(`interop-as: server_error ${ctx.method} ${ctx.path}: ${err?.stack ?? err}\n`);
  });
  if (LOG_REQUESTS) {
    provider.use(async (ctx, next) => {
      await next();
      const error = ctx.body?.error ? ` ${ctx.body.error}: ${ctx.body.error_description ?? ''}` : '';
      process.stderr.write(`interop-as: ${ctx.method} ${ctx.path} -> ${ctx.status}${error}\n`);
    });
    for (const event of ['grant.error', 'introspection.error', 'revocation.error', 'jwks.error', 'discovery.error']) {
      provider.on(event, (_ctx, err) => {
        const detail = err?.error_detail ?? err?.cause?.message;
        if (detail) process.stderr.write(`interop-as: ${event}: ${err.message}: ${detail}\n`);
      });
    }
  }
  if (STRICT_CLIENT_AUTH) provider.use(strictClientAuth(provider));

  handler = provider.callback();
  if (shuttingDown) return;
  process.stderr.write(
    `interop-as: oidc-provider listening; TOKEN_TTL=${TOKEN_TTL} OPAQUE_TOKEN_TTL=${OPAQUE_TOKEN_TTL} `
    + `SIGNING_ALG=${SIGNING_ALG} DPOP_NONCE=${DPOP_NONCE} STRICT_CLIENT_AUTH=${STRICT_CLIENT_AUTH ? 1 : 0}`
    + `${mtlsOrigin ? ` MTLS=${mtlsOrigin}` : ''}\n`,
  );
  process.stdout.write(`READY ${issuer}\n`);
});

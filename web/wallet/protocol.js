// The wallet's one conversation with the issuer: POST ../v1/tokens on the
// origin the page came from, body {"attestations":[...], "secret":"..."}.
// The same request is how a batch is first got, renewed when it runs low
// (after renew_after), replaced when its key was withdrawn, and retried
// after a lost answer: the issuer tells them apart by its replay record
// and the secret, the wallet never says which it is.
import { COLOURS } from './store.js';

export const MAX_ATTESTATION = 2048; // attestation.MaxLen
export const MAX_TOKEN = 1024; // token.MaxLen
export const JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;

// How long to wait before each quick retry of a lost answer. One only: the
// issuer allows a few retries per period (each lost answer it did record
// uses one), so the rest are kept for later (the next tick, the phone
// coming back online, the next load), when the network may have healed.
export const RETRY_DELAYS_MS = [1500];

const TOKENS_URL = () => new URL('../v1/tokens', location.href);
export const BUNDLE_URL = '/.well-known/healthcode/bundle';

// parseBatch checks the answer's shape; anything else is "unreadable".
export function parseBatch(body) {
  if (!body || typeof body !== 'object' || !COLOURS.includes(body.colour) || !Array.isArray(body.tokens) || body.tokens.length === 0) return null;
  const copies = [];
  for (const x of body.tokens) {
    if (!x || typeof x.token !== 'string' || x.token.length > MAX_TOKEN || !JWS.test(x.token)) return null;
    if (!Number.isInteger(x.nbf) || !Number.isInteger(x.exp) || x.exp <= x.nbf) return null;
    copies.push({ t: x.token, nbf: x.nbf, exp: x.exp, used: false });
  }
  const opt = (v) => (Number.isInteger(v) && v > 0 ? v : 0);
  return { batch: { v: 1, colour: body.colour, copies }, renewAfter: opt(body.renew_after), evidenceUntil: opt(body.evidence_until) };
}

// refusedIndex says which attestation of n the issuer refused, -1 for the
// request as a whole: its "index" if it gives one, else the "attestation
// N:" its message starts with, else the only one sent.
function refusedIndex(err, n) {
  if (err && Number.isInteger(err.index) && err.index >= 0 && err.index < n) return err.index;
  const m = err && typeof err.message === 'string' ? /^attestation (\d+):/.exec(err.message) : null;
  if (m && Number(m[1]) < n) return Number(m[1]);
  return n === 1 ? 0 : -1;
}

// postOnce sends one request and classifies the outcome:
//   {kind: 'ok', batch, renewAfter, evidenceUntil}
//   {kind: 'lost', status}       network error or 5xx: the issuer may have
//                                recorded it; retry with the same secret
//   {kind: 'refused', status, code, index}
//   {kind: 'unreadable'}         a 2xx whose body is not a batch
export async function postOnce(raws, secret) {
  let res;
  try {
    const body = { attestations: raws };
    if (secret) body.secret = secret;
    res = await fetch(TOKENS_URL(), {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(body),
      credentials: 'omit',
      cache: 'no-store',
      referrerPolicy: 'no-referrer',
      redirect: 'error',
    });
  } catch (e) {
    return { kind: 'lost', status: 0 };
  }
  let body = null;
  try { body = await res.json(); } catch (e) { body = null; }
  if (res.status >= 500) return { kind: 'lost', status: res.status };
  if (!res.ok) {
    const err = body && body.error && typeof body.error === 'object' ? body.error : null;
    const code = err && typeof err.code === 'string' ? err.code : '';
    return { kind: 'refused', status: res.status, code, index: refusedIndex(err, raws.length) };
  }
  const p = parseBatch(body);
  if (!p) return { kind: 'unreadable' };
  return Object.assign({ kind: 'ok' }, p);
}

// post sends and, after a lost answer, retries by itself with the same
// secret (onRetry is told before each retry). The last outcome is returned.
export async function post(raws, secret, onRetry) {
  let out = await postOnce(raws, secret);
  for (const ms of RETRY_DELAYS_MS) {
    if (out.kind !== 'lost') break;
    if (onRetry) onRetry(out);
    await new Promise((r) => setTimeout(r, ms));
    out = await postOnce(raws, secret);
  }
  return out;
}

// withdrawnKeys fetches the trust bundle and returns the ids of the keys
// the issuer has withdrawn. The wallet does not verify the bundle: it
// only uses the list to decide to ask for new codes earlier; the venue's
// verifier is what checks signatures. An empty list when unreachable.
export async function withdrawnKeys() {
  try {
    const res = await fetch(BUNDLE_URL, { cache: 'no-store', credentials: 'omit', redirect: 'error' });
    if (!res.ok) return [];
    const jws = (await res.text()).trim();
    const b = b64urlJSON(jws.split('.')[1]);
    return Array.isArray(b.withdrawn) ? b.withdrawn.filter((k) => typeof k === 'string') : [];
  } catch (e) {
    return [];
  }
}

export function b64urlJSON(part) {
  const b64 = String(part).replace(/-/g, '+').replace(/_/g, '/');
  const bin = atob(b64 + '==='.slice((b64.length + 3) % 4));
  const bytes = Uint8Array.from(bin, (ch) => ch.charCodeAt(0));
  return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
}

// keyID is the kid in a token's header.
export function keyID(tok) {
  try { return String(b64urlJSON(tok.split('.')[0]).kid || ''); } catch (e) { return ''; }
}

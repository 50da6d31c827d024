// What the wallet keeps on this phone (localStorage, nowhere else):
//
//  - the batch: {v:1, colour, copies:[{t, nbf, exp, used}]}. A copy that
//    has been shown keeps only its window (t is emptied), so it can never
//    be shown again and the phone holds nothing a venue has already seen.
//  - the redemptions: {v:1, groups:[{atts:[{raw, kind, at}], secret,
//    renewAfter, evidenceUntil, sending}]}, one group per request to the
//    issuer. The attestations stay while their evidence lasts, so the
//    wallet can renew its batch without a clinic visit; the secret (32
//    random bytes, base64url) lets a redemption whose answer was lost be
//    retried, and is the only thing that can. "sending" marks a request
//    whose answer has not arrived yet.
import { nowSec } from './common/clock.js';

export const STORE_KEY = 'healthcode.wallet.v1';
export const GROUPS_KEY = 'healthcode.attestations.v1';
export const COLOURS = ['green', 'yellow', 'red'];

function read(key) {
  try { return localStorage.getItem(key); } catch (e) { return null; }
}

function write(key, value) {
  try {
    if (value === null) localStorage.removeItem(key);
    else localStorage.setItem(key, JSON.stringify(value));
    return true;
  } catch (e) {
    return false;
  }
}

export function load() {
  const raw = read(STORE_KEY);
  if (!raw) return null;
  try {
    const w = JSON.parse(raw);
    if (w && w.v === 1 && COLOURS.includes(w.colour) && Array.isArray(w.copies)) return w;
  } catch (e) { /* fall through: an unreadable record is dropped */ }
  save(null);
  return null;
}

export function save(w) { return write(STORE_KEY, w); }

export function storageWorks() {
  try {
    localStorage.setItem(STORE_KEY + '.probe', '1');
    localStorage.removeItem(STORE_KEY + '.probe');
    return true;
  } catch (e) {
    return false;
  }
}

// sweep deletes expired copies; the whole record goes with the last one.
export function sweep() {
  const w = load();
  if (!w) return null;
  const s = nowSec();
  const keep = w.copies.filter((c) => c.exp > s);
  if (keep.length === 0) { save(null); return null; }
  if (keep.length !== w.copies.length) { w.copies = keep; save(w); }
  return w;
}

// summary says what the wallet holds at time s.
export function summary(w, s) {
  const valid = w.copies.filter((c) => c.nbf <= s && s < c.exp);
  const unusedNow = valid.filter((c) => !c.used);
  const future = w.copies.filter((c) => c.nbf > s);
  const unusedFuture = future.filter((c) => !c.used);
  const unused = w.copies.filter((c) => !c.used);
  const lastExp = unused.length ? Math.max(...unused.map((c) => c.exp)) : 0;
  const nextStart = unusedFuture.length ? Math.min(...unusedFuture.map((c) => c.nbf)) : 0;
  // The current code: the one the door screen would show now.
  const currentExp = unusedNow.length ? Math.min(...unusedNow.map((c) => c.exp)) : 0;
  return { valid, unusedNow, unusedFuture, unused, lastExp, nextStart, currentExp };
}

// ---- redemptions ------------------------------------------------------------

export function loadGroups() {
  const raw = read(GROUPS_KEY);
  if (!raw) return [];
  try {
    const g = JSON.parse(raw);
    if (g && g.v === 1 && Array.isArray(g.groups)) return g.groups.filter((x) => x && Array.isArray(x.atts) && typeof x.secret === 'string');
  } catch (e) { /* dropped below */ }
  write(GROUPS_KEY, null);
  return [];
}

export function saveGroups(groups) {
  return write(GROUPS_KEY, groups.length ? { v: 1, groups } : null);
}

// sweepGroups deletes every attestation whose evidence has ended: after
// evidenceUntil nothing can be renewed from it and it must not stay.
// A group still waiting for its first answer has no evidenceUntil yet.
export function sweepGroups() {
  const groups = loadGroups();
  const s = nowSec();
  const keep = groups.filter((g) => !(Number.isInteger(g.evidenceUntil) && g.evidenceUntil > 0 && g.evidenceUntil <= s));
  if (keep.length !== groups.length) saveGroups(keep);
  return keep;
}

// newSecret makes the 32 random bytes a redemption is retried with,
// base64url without padding.
export function newSecret() {
  const b = crypto.getRandomValues(new Uint8Array(32));
  return btoa(String.fromCharCode(...b)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

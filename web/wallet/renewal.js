// When the wallet talks to the issuer, and what it keeps from the answer.
//
//  - redeem: the results on the send list, once, with a new secret. The
//    request is written to the phone before it is sent, so an answer lost
//    on the way (network error, 5xx) is retried with the same secret, by
//    itself: once at once, then at the next load, when the phone comes back
//    online, or from the page's ticks every 15 minutes.
//  - renew: once renew_after has passed and the batch runs low, the held
//    attestations again, with a new secret, for the next period's batch.
//  - replace: codes under a key the issuer has withdrawn are replaced at
//    the next refresh, with the held secret (the issuer treats it as a
//    retry of this period's redemption and signs with its current key).
// The newest redemption's batch replaces the one before, so the wallet
// holds one group of attestations: the one its batch came from.
import { now, nowSec } from './common/clock.js';
import { save, sweep, summary, loadGroups, saveGroups, sweepGroups, newSecret } from './store.js';
import { post, withdrawnKeys, keyID } from './protocol.js';

export const LOW_SECONDS = 24 * 3600; // the batch "runs low" when its codes end within this
const MIN_GAP_MS = 60 * 1000; // between automatic attempts (page clock)
const BUNDLE_GAP_MS = 3600 * 1000; // between checks of the withdrawn keys
const LOST_BACKOFF_S = 15 * 60; // between retries of a lost answer, from the ticks

let busy = false;
let lastAuto = -Infinity;
let lastBundle = -Infinity;

export const isBusy = () => busy;

// install keeps a batch that came in for group g and returns what the
// page tells the resident: {batch, replaced} or {expired: true}.
function install(g, out) {
  const had = sweep();
  const replaced = !!(had && had.copies.some((c) => !c.used));
  g.sending = false;
  g.backoffUntil = 0;
  g.renewAfter = out.renewAfter;
  g.evidenceUntil = out.evidenceUntil;
  // Without an evidence end the wallet cannot know when to delete the
  // attestations, so it does not keep them.
  // Older groups are superseded by this batch.
  saveGroups(g.evidenceUntil > nowSec() ? [g] : []);
  const batch = out.batch;
  batch.copies = batch.copies.filter((c) => c.exp > nowSec());
  if (batch.copies.length === 0) return { expired: true };
  if (!save(batch)) return { storage: true };
  if (navigator.storage && navigator.storage.persist) navigator.storage.persist().catch(() => {});
  return { batch, replaced };
}

// send posts group g (already stored) and keeps what comes back. The
// outcome of the last attempt, with what install made of a batch.
async function send(g, first, onRetry) {
  busy = true;
  try {
    const out = await post(g.atts.map((a) => a.raw), g.secret, onRetry);
    if (out.kind === 'ok') return Object.assign(out, install(g, out));
    if (out.kind === 'lost') {
      // Kept for a later retry; the page's ticks wait a while (each lost
      // answer the issuer did record uses one of its few retries), the
      // next load or the phone coming back online do not.
      g.backoffUntil = nowSec() + LOST_BACKOFF_S;
      saveGroups(loadGroups().map((x) => (x.secret === g.secret ? g : x)));
    }
    if (out.kind === 'refused' || out.kind === 'unreadable') {
      if (first || out.code === 'attestation_expired' || out.code === 'evidence_window_ended') {
        // Nothing was recorded for it, or nothing more can come of it.
        saveGroups(loadGroups().filter((x) => x.secret !== g.secret));
      } else {
        // A renewal or replacement refused (another device renewed it, or
        // too many retries): the codes held stay; try again in an hour.
        g.sending = false;
        g.backoffUntil = nowSec() + 3600;
        saveGroups([g]);
      }
    }
    return out;
  } finally {
    busy = false;
  }
}

// redeem sends the send list (items {raw, kind, at}). A request whose
// answer was lost earlier for the same list is retried with its secret.
export async function redeem(items, onRetry) {
  const raws = items.map((p) => p.raw);
  let groups = loadGroups();
  let g = groups.find((x) => x.sending && x.atts.length === raws.length && x.atts.every((a, i) => a.raw === raws[i]));
  if (!g) {
    g = { atts: items.map((p) => ({ raw: p.raw, kind: p.kind, at: p.at })), secret: newSecret(), sending: true, renewAfter: 0, evidenceUntil: 0 };
    groups = groups.filter((x) => !x.sending).concat([g]);
    if (!saveGroups(groups)) return { kind: 'storage' };
  }
  lastAuto = now();
  return send(g, true, onRetry);
}

// due says what the held group needs now: 'retry' (an answer was lost;
// at once when forced, by a load or the phone coming online),
// 'renew' (a new period and the batch runs low), or ''.
function due(g, w, s, force) {
  if (g.sending) return !force && g.backoffUntil && s < g.backoffUntil ? '' : 'retry';
  if (g.backoffUntil && s < g.backoffUntil) return '';
  if (!g.renewAfter || s < g.renewAfter) return '';
  if (!w) return 'renew';
  const sum = summary(w, s);
  return sum.unused.length === 0 || sum.lastExp - s < LOW_SECONDS ? 'renew' : '';
}

// refresh runs on load, on every tick and when the phone comes back
// online. It returns {kind: 'renewed'|'replaced'|..., ...} when it sent a
// request, null when there was nothing to do.
export async function refresh(force) {
  if (busy || !navigator.onLine) return null;
  const groups = sweepGroups();
  const t = now();
  if (!force && t - lastAuto < MIN_GAP_MS) return null;
  const g = groups[groups.length - 1];
  if (!g) return null;
  const s = nowSec();
  const w = sweep();
  let why = due(g, w, s, force);
  if (!why && w && !(g.backoffUntil && s < g.backoffUntil) && t - lastBundle >= BUNDLE_GAP_MS) {
    lastBundle = t;
    const withdrawn = await withdrawnKeys();
    if (withdrawn.length && w.copies.some((c) => !c.used && c.t && withdrawn.includes(keyID(c.t)))) why = 'replace';
  }
  if (!why) return null;
  lastAuto = t;
  if (why === 'renew') {
    g.secret = newSecret();
    g.sending = true;
    if (!saveGroups([g])) return null;
  }
  const out = await send(g, why === 'retry' && !g.evidenceUntil);
  out.why = why;
  out.sent = g.atts.map((a) => a.raw);
  return out;
}

// recheckSoon makes the next refresh look at the withdrawn keys
// again (the page calls it when it comes back online).
export function recheckSoon() { lastBundle = -Infinity; lastAuto = -Infinity; }


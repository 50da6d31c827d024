// The home screen: the status card (colour, the current code's and the
// batch's ends, labelled), the send list, and the messages about sending.
import { nowSec } from './common/clock.js';
import { sweep, summary, storageWorks } from './store.js';
import { JWS, MAX_ATTESTATION, b64urlJSON } from './protocol.js';
import { redeem, isBusy, LOW_SECONDS } from './renewal.js';
import { $, t, tx, when, colourWord, para, say, SYMBOLS } from './ui.js';

const pending = []; // results added but not sent: memory only

export function renderStatus() {
  const w = sweep();
  const body = $('status-body');
  const warn = $('warning');
  body.textContent = '';
  warn.hidden = true;
  const s = nowSec();
  const sum = w ? summary(w, s) : null;
  showButton(!!(sum && sum.unusedNow.length));
  if (!w) {
    body.append(chip(null), para(t('status.none')));
    return;
  }
  body.append(chip(w.colour));
  if (sum.unused.length === 0) {
    body.append(para(t('status.allUsed')));
    return;
  }
  if (sum.currentExp) body.append(labelled('status-current', t('status.current', { until: when(sum.currentExp) })));
  body.append(labelled('status-batch', t('status.batch', { until: when(sum.lastExp) })));
  body.append(para(t('status.count', { n: sum.unused.length })));
  if (sum.unusedNow.length === 0 && sum.nextStart) {
    const key = sum.valid.length ? 'status.windowUsed' : 'status.waiting';
    body.append(para(t(key, { time: when(sum.nextStart) })));
  }
  if (sum.lastExp - s < LOW_SECONDS) {
    warn.textContent = t('warn.low', { left: tx.duration(sum.lastExp - s) });
    warn.hidden = false;
  }
}

function labelled(id, text) {
  const p = para(text);
  p.id = id;
  return p;
}

// With no code to show now, the door button says so and does not look
// like an action; pressing it still explains why on the door screen.
function showButton(active) {
  const b = $('show');
  b.classList.toggle('inactive', !active);
  b.setAttribute('aria-disabled', active ? 'false' : 'true');
  b.textContent = active ? t('show') : t('show.none');
}

function chip(colour) {
  const d = document.createElement('div');
  d.className = 'chip ' + (colour || 'none');
  d.id = 'status-chip';
  if (colour) {
    const sym = document.createElement('span');
    sym.setAttribute('aria-hidden', 'true');
    sym.textContent = SYMBOLS[colour];
    const word = document.createElement('span');
    word.textContent = colourWord(colour);
    d.append(sym, word);
    d.dataset.colour = colour;
  } else {
    d.textContent = '—';
    d.setAttribute('aria-hidden', 'true');
  }
  return d;
}

export function renderOffline() {
  $('offline').hidden = navigator.onLine;
}

// ---- the send list ----------------------------------------------------------

// describe reads the attestation's payload only to name it in the list;
// the issuer is the one that checks it.
function describe(raw) {
  let claims;
  try { claims = b64urlJSON(raw.split('.')[1]); } catch (e) { return null; }
  if (!claims || typeof claims !== 'object') return null;
  return { kind: typeof claims.kind === 'string' ? claims.kind : '', at: Number.isInteger(claims.at) ? claims.at : 0 };
}

function itemText(p) {
  const kindText = tx.has('kind.' + p.kind) ? t('kind.' + p.kind) : t('pending.unknown');
  if (!p.at) return kindText;
  return t('pending.item', { kind: kindText, date: when(p.at) });
}

export function addAttestation(text) {
  const raw = String(text || '').replace(/\s+/g, '');
  if (!raw || raw.length > MAX_ATTESTATION || !JWS.test(raw)) { say(t('msg.notAttestation'), true); return false; }
  const d = describe(raw);
  if (!d) { say(t('msg.notAttestation'), true); return false; }
  if (pending.some((p) => p.raw === raw)) { say(t('msg.duplicate'), true); return false; }
  const p = { raw, kind: d.kind, at: d.at };
  pending.push(p);
  renderPending();
  say(t('msg.added', { item: itemText(p) }));
  return true;
}

// forget takes results off the send list (their codes have come).
export function forget(raws) {
  for (const raw of raws) {
    const at = pending.findIndex((p) => p.raw === raw);
    if (at >= 0) pending.splice(at, 1);
  }
  renderPending();
}

export function renderPending() {
  const ul = $('pending');
  ul.textContent = '';
  pending.forEach((p, i) => {
    const li = document.createElement('li');
    const span = document.createElement('span');
    span.textContent = itemText(p);
    const rm = document.createElement('button');
    rm.type = 'button';
    rm.textContent = t('remove');
    rm.setAttribute('aria-label', t('remove.label', { item: itemText(p) }));
    rm.addEventListener('click', () => { pending.splice(i, 1); renderPending(); $('paste').focus(); });
    li.append(span, rm);
    ul.append(li);
  });
  $('pending-none').hidden = pending.length > 0;
}

// ---- sending ------------------------------------------------------------------

const LOCAL = ['unreachable', 'lost', 'badAnswer', 'storage', 'refused'];

function refusalText(code, status) {
  if (code && !LOCAL.includes(code) && tx.has('err.' + code)) return t('err.' + code);
  if (status === 429) return t('err.rate_limited');
  if (status === 413) return t('err.body_too_large');
  return t('err.refused');
}

// successText is the message after a batch arrived; it names the batch's
// end, the same "codes on this phone last until" the status card shows.
export function successText(key, out) {
  const last = Math.max(...out.batch.copies.map((c) => c.exp));
  let msg = t(key, { n: out.batch.copies.length, colour: colourWord(out.batch.colour), symbol: SYMBOLS[out.batch.colour], until: when(last) });
  if (out.replaced && key === 'msg.success') msg += ' ' + t('msg.replaced');
  return msg;
}

// showCard brings the colour card into view and to the reader's focus.
function showCard() {
  const card = $('status');
  card.scrollIntoView({ block: 'start' });
  card.focus({ preventScroll: true });
}

export async function onRedeem() {
  if (pending.length === 0) { say(t('msg.nothing'), true); return; }
  // Spending an attestation whose tokens could not be kept would lose it.
  if (!storageWorks()) { say(t('err.storage'), true); return; }
  if (isBusy()) return;
  const btn = $('redeem');
  btn.disabled = true;
  say(t('msg.sending'));
  try {
    // Offline, nothing leaves the phone: no request can have been recorded.
    if (!navigator.onLine) { say(t('err.unreachable'), true); return; }
    const sent = pending.slice();
    const out = await redeem(sent, () => say(t('msg.retrying')));
    if (out.kind === 'storage') { say(t('err.storage'), true); return; }
    // Lost: the issuer may have recorded it; the stored request is retried
    // by itself (renewal.js) with the same secret.
    if (out.kind === 'lost') { say(t('err.lost'), true); return; }
    if (out.kind === 'unreadable') { say(t('err.badAnswer'), true); return; }
    if (out.kind === 'refused') {
      const reason = refusalText(out.code, out.status);
      if (out.index >= 0 && out.index < sent.length) {
        // The refused result leaves the list, so the others can go again.
        const gone = sent[out.index];
        const at = pending.indexOf(gone);
        if (at >= 0) pending.splice(at, 1);
        renderPending();
        say(t('msg.refused', { item: itemText(gone), reason }), true);
      } else {
        say(reason, true);
      }
      return;
    }
    // The results are spent: forget them from the list.
    for (const p of sent) { const at = pending.indexOf(p); if (at >= 0) pending.splice(at, 1); }
    renderPending();
    renderStatus();
    if (out.expired) { say(t('msg.allExpired'), true); return; }
    if (out.storage) { say(t('err.storage'), true); return; }
    say(successText('msg.success', out));
    showCard();
  } finally {
    btn.disabled = false;
  }
}

// Healthcode resident wallet: the start of the page and what runs on its
// own (the sweep, renewal, retry). The page talks to one endpoint, POST
// ../v1/tokens on the origin it was served from, and reads the public
// trust bundle for withdrawn keys. The batch and the attestations it came
// from live in localStorage on this phone and nowhere else. Showing a code
// needs no network.
//
// Modules: texts.js (words), store.js (what is kept), protocol.js (the
// request), renewal.js (when to send), home.js, door.js, scan.js (screens),
// ui.js (shared by the screens), common/ (shared with the verifier app:
// clock, translations, QR reading, service-worker core).
//
// Time: every reading of the clock goes through common/clock.js now(); a
// test sets window.__healthcodeNow to move it (see there).
import { $, t, tx, say, switchLanguage } from './ui.js';
import { renderStatus, renderPending, renderOffline, addAttestation, onRedeem, successText, forget } from './home.js';
import { openDoor, closeDoor, updateDoor, relabel, isOpen, onDoorChange } from './door.js';
import { onFile, startCamera, stopCamera, onCode } from './scan.js';
import { refresh, recheckSoon } from './renewal.js';

const TICK_MS = 15000; // sweep and refresh interval

function applyText() {
  tx.apply(document);
  document.title = t('title');
  const b = $('lang');
  b.textContent = t('lang.other');
  b.lang = tx.lang === 'zh' ? 'en' : 'zh-Hans';
  b.setAttribute('aria-label', t('lang.otherLabel'));
  $('offline').textContent = t('offline');
}

// background renews, retries or replaces by itself, and says so.
async function background(force) {
  const out = await refresh(force);
  if (!out) return;
  renderStatus();
  if (out.kind === 'ok' && out.batch) {
    say(successText(out.why === 'retry' ? 'msg.recovered' : 'msg.renewed', out));
    // The results whose answer was lost earlier are in: off the list.
    forget(out.sent || []);
  }
}

function tick() {
  renderStatus();
  renderOffline();
  if (isOpen()) updateDoor();
  background(false);
}

function start() {
  // Open at the top, where the status and the door button are.
  if ('scrollRestoration' in history) history.scrollRestoration = 'manual';
  applyText();
  renderStatus();
  renderPending();
  renderOffline();
  onDoorChange(renderStatus);
  onCode(addAttestation);
  $('lang').addEventListener('click', () => {
    switchLanguage();
    applyText();
    renderStatus();
    renderPending();
    relabel();
  });
  $('show').addEventListener('click', openDoor);
  $('door-close').addEventListener('click', closeDoor);
  document.addEventListener('keydown', (e) => { if (e.key === 'Escape' && isOpen()) closeDoor(); });
  $('paste-add').addEventListener('click', () => { if (addAttestation($('paste').value)) $('paste').value = ''; });
  $('redeem').addEventListener('click', onRedeem);
  $('file').addEventListener('change', onFile);
  $('scan').addEventListener('click', startCamera);
  $('scan-stop').addEventListener('click', stopCamera);
  setInterval(tick, TICK_MS);
  // Timers stop while a phone sleeps; sweep again when the page comes back.
  window.addEventListener('focus', tick);
  window.addEventListener('pageshow', tick);
  document.addEventListener('visibilitychange', () => { if (!document.hidden) tick(); });
  window.addEventListener('offline', renderOffline);
  window.addEventListener('online', () => { renderOffline(); recheckSoon(); background(true); });
  if ('serviceWorker' in navigator) navigator.serviceWorker.register('sw.js').catch(() => {});
  document.body.dataset.ready = '1';
  background(true);
}

start();

// Verifier web app. The rules live in Go (verifier.wasm, see web/wasm);
// this module only moves pixels and strings between the camera, the module
// and the screen.
//
// Storage (invariant 3): only the trust bundle, its pin and when this
// device last fetched it are written (localStorage, and the service
// worker's cache of the bundle response), plus, only when the bundle's
// policy allows counting and the venue switched it on for this device,
// that setting and per-day counts per colour. No token, hint or scan time
// is ever stored. Everything printed from a token goes through
// textContent, never innerHTML.
//
// Time: every reading of the clock goes through common/clock.js now(); a
// test sets window.__healthcodeNow to move it.
import { now } from './common/clock.js';
import { Texts } from './common/i18n.js';
import { FrameReader, scanRegions, photoRegions } from './common/qrread.js';
import { STRINGS } from './i18n.js';

const BUNDLE_URL = '/.well-known/healthcode/bundle';
const PIN_URL = '/.well-known/healthcode/pin';
const K_BUNDLE = 'healthcode.bundle';
const K_PIN = 'healthcode.pin';
const K_FETCHED = 'healthcode.fetched'; // this device's clock at the last fetch of the held bundle
const K_COUNTS = 'healthcode.counts';
const K_COUNTING = 'healthcode.counting'; // "on" when the venue switched counting on here
const RESULT_MS = 5000;       // the result clears itself after this
const SAME_CODE_MS = 4000;    // the same code held up again is ignored this long
const SCAN_INTERVAL_MS = 80;  // pause between frames
const MAX_FRAME_SIDE = 640;   // frames are scaled down to this before decoding
const COUNT_DAYS = 7;         // counts older than this are dropped
const SYNC_MS = 10 * 60 * 1000; // how often an open page fetches the bundle again
const PIN_TEXT = /^sha256:[0-9a-f]{64}$/; // the pin poster's QR (contract 5)

const $ = (id) => document.getElementById(id);
const tx = new Texts(STRINGS, new URLSearchParams(location.search).get('lang'), navigator.languages || [navigator.language]);
const t = (key, vars) => tx.t(key, vars);
const state = {
  jws: '',
  pin: '',
  info: null,          // healthcode.openBundle result
  offline: false,      // the last fetch failed
  camera: 'starting',  // starting | on | denied | none | error
  stream: null,
  showing: false,
  clearTimer: 0,
  lastText: '',
  lastClearedAt: -Infinity,
  posterPin: '',       // a scanned poster's pin that differs from the held one
  pinMessage: '',
};

// Scan metrics, in memory only, for the browser test and for operators
// looking at the console: how long decoding a frame and a whole scan take.
const metrics = { frames: 0, decodeMsTotal: 0, decodeMsMax: 0, lastDecodeMs: 0, lastGrabMs: 0, lastVerifyMs: 0, verdicts: 0, lastScanToVerdictMs: 0, lastRegion: '' };
window.healthcodeMetrics = metrics;

// ---- language -------------------------------------------------------------

function applyLanguage() {
  tx.apply(document);
  document.title = t('title');
  const b = $('lang');
  b.textContent = t('switchTo');
  b.lang = tx.lang === 'zh' ? 'en' : 'zh-Hans';
  renderBundle();
  renderCamera();
  renderCounts();
  renderPin();
}

$('lang').addEventListener('click', () => {
  tx.lang = tx.lang === 'zh' ? 'en' : 'zh';
  const u = new URL(location.href);
  u.searchParams.set('lang', tx.lang);
  history.replaceState(null, '', u);
  applyLanguage();
});

// ---- the WebAssembly module ----------------------------------------------

async function loadEngine() {
  const go = new window.Go();
  // instantiate from bytes, not instantiateStreaming: servers differ on the
  // application/wasm content type and the service worker's copy has it too.
  const resp = await fetch('verifier.wasm');
  if (!resp.ok) throw new Error('verifier.wasm: HTTP ' + resp.status);
  const { instance } = await WebAssembly.instantiate(await resp.arrayBuffer(), go.importObject);
  const ready = new Promise((resolve) => window.addEventListener('healthcode-ready', resolve, { once: true }));
  go.run(instance);
  if (!(window.healthcode && window.healthcode.ready)) await ready;
}

// ---- trust bundle ----------------------------------------------------------

// fetchText fetches url from the network; the service worker's saved copy
// counts as offline (the page holds that copy already).
async function fetchText(url) {
  if (!navigator.onLine) throw new Error('offline');
  const r = await fetch(url, { cache: 'no-store', credentials: 'omit' });
  if (!r.ok) throw new Error(url + ': HTTP ' + r.status);
  if (r.headers.get('X-Healthcode-Saved-Copy')) throw new Error(url + ': offline, saved copy');
  return (await r.text()).trim();
}

// loadBundle takes the pin on first use from the origin the page came from
// (or from the pin poster, scanned before), then accepts a fetched bundle
// only if it opens under that pin and is not older than the one held (no
// rollback). Offline, the held bundle is used.
async function loadBundle() {
  let pin = localStorage.getItem(K_PIN) || '';
  let jws = localStorage.getItem(K_BUNDLE) || '';
  const at = now();
  const held = jws && pin ? window.healthcode.openBundle(jws, pin, at) : null;
  try {
    if (!pin) pin = await fetchText(PIN_URL);
    const fresh = await fetchText(BUNDLE_URL);
    const info = window.healthcode.openBundle(fresh, pin, at);
    if (info.ok || info.reason === 'bundle_expired') {
      if (!held || !held.ok || held.reason === 'bundle_expired' || info.seq >= held.seq) {
        jws = fresh;
        localStorage.setItem(K_PIN, pin);
        localStorage.setItem(K_BUNDLE, jws);
        localStorage.setItem(K_FETCHED, String(at));
      }
    } else if (!held) {
      // Nothing held and what came does not open: show why, keep nothing.
      state.jws = ''; state.pin = ''; state.info = info;
      state.offline = false;
      return;
    }
    state.offline = false;
  } catch (e) {
    state.offline = true;
  }
  state.jws = jws;
  state.pin = jws ? pin : '';
  state.info = jws ? window.healthcode.openBundle(jws, pin, at) : { ok: false, reason: 'no_bundle' };
}

async function sync() {
  if (document.body.dataset.engine !== 'ready') return;
  await loadBundle();
  renderBundle();
  renderCounts();
  renderPin();
  // For tests and staff tools: how many syncs have finished.
  document.body.dataset.syncs = String(Number(document.body.dataset.syncs || 0) + 1);
}

function bundleState(at) {
  const i = state.info;
  if (!i) return 'loading';
  if (i.ok && i.expired) return 'expired';
  if (!i.ok) return i.reason === 'bundle_expired' ? 'expired' : (i.reason === 'no_bundle' ? 'none' : 'invalid');
  return at >= i.staleAfter ? 'stale' : 'ok';
}

function ago(ms) {
  return now() - ms < 60 * 1000 ? t('justNow') : tx.ago(ms, now());
}

function renderBundle() {
  const at = now();
  const bs = bundleState(at);
  document.body.dataset.bundle = bs;
  const el = $('bundle-status');
  const lines = [];
  if (bs === 'loading') lines.push(t('bundleLoading'));
  const fetched = Number(localStorage.getItem(K_FETCHED) || 0);
  if (state.jws && fetched > 0) lines.push(t('bundleFetched', { age: ago(fetched) }));
  if (state.offline && state.jws) lines.push(t('bundleOffline'));
  if (bs === 'stale') lines.push(t('bundleStale'));
  if (bs === 'expired') lines.push(t('bundleExpired'));
  if (bs === 'none') lines.push(t('bundleNone'));
  if (bs === 'invalid') lines.push(t('bundleInvalid'));
  el.textContent = lines.join(' ');
  el.className = bs;
  renderOffline();
}

function renderOffline() {
  const off = state.offline || !navigator.onLine;
  const el = $('offline');
  el.hidden = !off;
  el.textContent = off ? t('offline') : '';
  document.body.dataset.online = off ? 'no' : 'yes';
}

window.addEventListener('offline', renderOffline);
// Timers stop while a tablet sleeps: the trust list's age is redrawn when
// the page comes back.
window.addEventListener('focus', () => renderBundle());
window.addEventListener('online', () => { renderOffline(); sync(); });

// ---- the pin: shown in settings, set or confirmed from the poster -----------

function renderPin() {
  const held = state.pin || localStorage.getItem(K_PIN) || '';
  $('pin-value').textContent = held;
  $('pin-value').hidden = !held;
  $('pin-held').textContent = held ? t('pinHeld') : t('pinNone');
  $('pin-status').textContent = state.pinMessage ? t(state.pinMessage) : '';
  $('pin-replace').hidden = !state.posterPin;
}

function openSettings(open) {
  $('settings').hidden = !open;
  $('settings-toggle').setAttribute('aria-expanded', open ? 'true' : 'false');
  if (open) renderPin();
}

$('settings-toggle').addEventListener('click', () => openSettings($('settings').hidden));
$('pin-scan').addEventListener('click', () => {
  state.pinMessage = 'pinLooking';
  state.posterPin = '';
  renderPin();
});

// posterPin handles the text of a pin poster, wherever it was read.
async function onPoster(pin) {
  openSettings(true);
  const held = localStorage.getItem(K_PIN) || '';
  state.posterPin = '';
  if (!held) {
    localStorage.setItem(K_PIN, pin);
    state.pinMessage = 'pinSet';
    await sync();
  } else if (held === pin) {
    state.pinMessage = 'pinMatch';
  } else {
    state.posterPin = pin;
    state.pinMessage = 'pinDiffers';
  }
  $('pin-status').dataset.result = state.pinMessage;
  renderPin();
}

$('pin-replace').addEventListener('click', async () => {
  const pin = state.posterPin;
  if (!pin) return;
  // A new pin: the bundle held under the old one, and its rollback floor,
  // go; the next fetch is checked against the poster's key.
  localStorage.removeItem(K_BUNDLE);
  localStorage.removeItem(K_FETCHED);
  localStorage.setItem(K_PIN, pin);
  state.posterPin = '';
  state.pinMessage = 'pinReplaced';
  $('pin-status').dataset.result = 'pinReplaced';
  await sync();
});

// ---- counts (only when the policy allows them and the venue turns them on) --

function today() {
  const d = new Date(now());
  return d.getFullYear() + '-' + String(d.getMonth() + 1).padStart(2, '0') + '-' + String(d.getDate()).padStart(2, '0');
}

// Counting needs both the city's permission (the bundle's policy) and the
// venue's choice on this device; it is off until the venue turns it on.
function countingAllowed() { return !!(state.info && state.info.ok && state.info.counting); }
function countingOn() { return countingAllowed() && localStorage.getItem(K_COUNTING) === 'on'; }

function readCounts() {
  try { return JSON.parse(localStorage.getItem(K_COUNTS) || '{}') || {}; } catch { return {}; }
}

function count(kind) {
  if (!countingOn()) return;
  const all = readCounts();
  const day = today();
  const c = all[day] || { green: 0, yellow: 0, red: 0, invalid: 0 };
  c[kind] = (c[kind] || 0) + 1;
  all[day] = c;
  for (const d of Object.keys(all).sort().slice(0, -COUNT_DAYS)) delete all[d];
  localStorage.setItem(K_COUNTS, JSON.stringify(all));
  renderCounts();
}

function renderCounts() {
  const el = $('counts');
  const sw = $('counting');
  $('counting-switch').hidden = !countingAllowed();
  sw.checked = countingOn();
  if (!countingOn()) {
    // Until the bundle is read nothing is known, so nothing is dropped;
    // after that, a policy without counting drops the counts and the
    // venue's setting, and a venue that has counting off keeps no counts.
    if (state.info) {
      localStorage.removeItem(K_COUNTS);
      if (!countingAllowed()) localStorage.removeItem(K_COUNTING);
    }
    el.hidden = true;
    return;
  }
  const c = readCounts()[today()] || {};
  el.textContent = t('countsToday', { green: c.green || 0, yellow: c.yellow || 0, red: c.red || 0, invalid: c.invalid || 0 });
  el.hidden = false;
}

$('counting').addEventListener('change', (ev) => {
  if (ev.target.checked && countingAllowed()) localStorage.setItem(K_COUNTING, 'on');
  else localStorage.removeItem(K_COUNTING); // turning it off deletes the counts too (renderCounts)
  renderCounts();
});

// ---- verdicts --------------------------------------------------------------

const SYMBOL = { green: '✓', yellow: '!', red: '✕', invalid: '✕', refused: '⚠' };

// read handles any text the camera, a photo or the paste box gave: a pin
// poster goes to the settings, anything else is checked as a code.
function read(text, started) {
  if (PIN_TEXT.test(text)) { onPoster(text); return; }
  check(text, started);
}

// check verifies text and shows the verdict. started is the performance.now()
// at which the frame holding it was grabbed (or the user acted).
function check(text, started) {
  const t0 = performance.now();
  const v = window.healthcode.verify(text, state.jws, state.pin, now());
  metrics.lastVerifyMs = performance.now() - t0;
  let kind;
  if (v.valid) kind = v.colour;
  else if (v.reason === 'bundle_expired' || v.reason === 'no_bundle' || v.reason === 'bundle_invalid') kind = 'refused';
  else kind = 'invalid';
  showResult(kind, v);
  metrics.verdicts++;
  metrics.lastScanToVerdictMs = performance.now() - started;
  if (kind !== 'refused') count(kind);
}

function reasonText(reason) {
  const key = 'reason_' + reason;
  return tx.has(key) ? t(key) : t('reason_invalid');
}

function showResult(kind, v) {
  const r = $('result');
  r.dataset.verdict = kind;
  r.dataset.reason = v.valid ? '' : v.reason;
  $('result-symbol').textContent = SYMBOL[kind];
  $('result-word').textContent = t(kind);
  $('result-detail').textContent = v.valid ? t('validUntil', { time: tx.when(v.expires, now()) }) : reasonText(v.reason);
  // The hint is only there when the policy turns it on (the module refuses
  // a token carrying one otherwise); it is text from the token, so
  // textContent only.
  $('result-hint').textContent = v.valid && v.hint ? t('hint', { hint: v.hint }) : '';
  $('result-warning').textContent = v.valid && v.stale ? t('staleOnResult') : '';
  r.hidden = false;
  document.body.dataset.verdict = kind;
  state.showing = true;
  clearTimeout(state.clearTimer);
  state.clearTimer = setTimeout(clearResult, RESULT_MS);
  r.focus();
}

function clearResult() {
  clearTimeout(state.clearTimer);
  const r = $('result');
  r.hidden = true;
  delete r.dataset.verdict;
  delete r.dataset.reason;
  for (const id of ['result-symbol', 'result-word', 'result-detail', 'result-hint', 'result-warning']) $(id).textContent = '';
  delete document.body.dataset.verdict;
  state.showing = false;
  state.lastClearedAt = now();
}

$('result').addEventListener('click', clearResult);

// ---- camera ----------------------------------------------------------------

// The photo and paste fallbacks are always there; the camera's state only
// decides the message and the retry button.
function renderCamera() {
  document.body.dataset.camera = state.camera;
  const msg = { denied: 'cameraDenied', none: 'cameraNone', error: 'cameraError' }[state.camera];
  $('scanner').hidden = !!msg;
  $('camera-message').textContent = msg ? t(msg) : '';
  $('camera-message').hidden = !msg;
  $('retry-camera').hidden = !msg;
  $('scan-hint').textContent = state.camera === 'starting' ? t('cameraStarting') : t('pointCamera');
}

async function startCamera() {
  state.camera = 'starting';
  renderCamera();
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    state.camera = 'none';
    renderCamera();
    return;
  }
  try {
    state.stream = await navigator.mediaDevices.getUserMedia({
      audio: false,
      video: { facingMode: { ideal: 'environment' }, width: { ideal: 1280 }, height: { ideal: 720 } },
    });
  } catch (e) {
    state.camera = (e.name === 'NotAllowedError' || e.name === 'SecurityError') ? 'denied'
      : (e.name === 'NotFoundError' || e.name === 'OverconstrainedError') ? 'none' : 'error';
    renderCamera();
    return;
  }
  const video = $('video');
  video.srcObject = state.stream;
  await video.play().catch(() => {});
  state.camera = 'on';
  renderCamera();
  scheduleScan();
}

function stopCamera() {
  if (state.stream) for (const tr of state.stream.getTracks()) tr.stop();
  state.stream = null;
  $('video').srcObject = null;
}

function decodePixels(img) {
  const t0 = performance.now();
  const text = window.healthcode.decode(img.data, img.width, img.height);
  const ms = performance.now() - t0;
  metrics.frames++;
  metrics.decodeMsTotal += ms;
  metrics.lastDecodeMs = ms;
  if (ms > metrics.decodeMsMax) metrics.decodeMsMax = ms;
  return text;
}

const reader = new FrameReader($('frame'), decodePixels, MAX_FRAME_SIDE);

let scanTimer = 0;
let frameNo = 0;
function scheduleScan() {
  clearTimeout(scanTimer);
  scanTimer = setTimeout(scanOnce, SCAN_INTERVAL_MS);
}

// Each frame is read whole or, every other frame, its centre scaled up.
function scanOnce() {
  if (state.camera !== 'on' || !state.stream) return;
  const video = $('video');
  if (!state.showing && !document.hidden && video.readyState >= 2 && video.videoWidth > 0) {
    const started = performance.now();
    const regions = scanRegions(video.videoWidth, video.videoHeight);
    const region = regions[frameNo++ % regions.length];
    const img = reader.pixels(video, region);
    metrics.lastRegion = region.whole ? 'whole' : 'centre';
    metrics.lastGrabMs = performance.now() - started;
    const text = decodePixels(img);
    const again = text && text === state.lastText && now() - state.lastClearedAt < SAME_CODE_MS;
    if (text && !again) {
      state.lastText = text;
      read(text, started);
    }
  }
  scheduleScan();
}

document.addEventListener('visibilitychange', () => {
  if (document.hidden) { stopCamera(); state.camera = 'starting'; }
  else if (document.body.dataset.engine === 'ready') startCamera();
});

// ---- always there: a photo or pasted text -------------------------------------

$('file').addEventListener('change', async (ev) => {
  const f = ev.target.files && ev.target.files[0];
  ev.target.value = '';
  if (!f) return;
  const started = performance.now();
  let text = '';
  try {
    const bmp = await createImageBitmap(f);
    text = reader.readAny(bmp, photoRegions(bmp.width, bmp.height));
    bmp.close();
  } catch { text = ''; }
  if (text) read(text, started);
  else $('fallback-message').textContent = t('noCodeInImage');
});

$('check').addEventListener('click', () => {
  const box = $('paste');
  const text = box.value.trim();
  box.value = '';
  $('fallback-message').textContent = '';
  if (text) read(text, performance.now());
});

$('retry-camera').addEventListener('click', startCamera);

// ---- start -----------------------------------------------------------------

async function main() {
  applyLanguage();
  if ('serviceWorker' in navigator) {
    navigator.serviceWorker.register('sw.js', { scope: './' }).catch(() => {});
  }
  try {
    await loadEngine();
  } catch (e) {
    document.body.dataset.engine = 'failed';
    $('bundle-status').textContent = t('engineFailed');
    return;
  }
  document.body.dataset.engine = 'ready';
  await sync();
  setInterval(renderBundle, 60 * 1000);
  setInterval(sync, SYNC_MS);
  startCamera();
}

main();

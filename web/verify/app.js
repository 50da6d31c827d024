// Verifier web app. The rules live in Go (verifier.wasm, see web/wasm);
// this file only moves pixels and strings between the camera, the module and
// the screen.
//
// Storage (invariant 3): only the trust bundle and its pin are written
// (localStorage, and the service worker's cache of the bundle response),
// plus, only when the bundle's policy allows counting and the venue switched
// it on for this device, that setting and per-day counts per colour.
// No token, hint or scan time is ever stored.
'use strict';

const BUNDLE_URL = '/.well-known/healthcode/bundle';
const PIN_URL = '/.well-known/healthcode/pin';
const K_BUNDLE = 'healthcode.bundle';
const K_PIN = 'healthcode.pin';
const K_COUNTS = 'healthcode.counts';
const K_COUNTING = 'healthcode.counting'; // "on" when the venue switched counting on here
const RESULT_MS = 5000;       // the result clears itself after this
const SAME_CODE_MS = 4000;    // the same code held up again is ignored this long
const SCAN_INTERVAL_MS = 80;  // pause between frames
const MAX_FRAME_SIDE = 640;   // frames are scaled down to this before decoding
const COUNT_DAYS = 7;         // counts older than this are dropped

const $ = (id) => document.getElementById(id);
const state = {
  lang: pickLanguage(location.search, navigator.languages || [navigator.language]),
  jws: '',
  pin: '',
  info: null,          // healthcode.openBundle result
  offline: false,
  camera: 'starting',  // starting | on | denied | none | error
  stream: null,
  showing: false,
  clearTimer: 0,
  lastText: '',
  lastClearedAt: 0,
};

// Scan metrics, in memory only, for the browser test and for operators
// looking at the console: how long decoding a frame and a whole scan take.
const metrics = { frames: 0, decodeMsTotal: 0, decodeMsMax: 0, lastDecodeMs: 0, lastGrabMs: 0, lastVerifyMs: 0, verdicts: 0, lastScanToVerdictMs: 0 };
window.healthcodeMetrics = metrics;

// ---- language -------------------------------------------------------------

function t(key, vars) { return tr(state.lang, key, vars); }

function applyLanguage() {
  document.documentElement.lang = state.lang === 'zh' ? 'zh-Hans' : 'en';
  document.title = t('title');
  for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
  const b = $('lang');
  b.textContent = t('switchTo');
  b.lang = state.lang === 'zh' ? 'en' : 'zh-Hans';
  renderBundle();
  renderCamera();
  renderCounts();
}

$('lang').addEventListener('click', () => {
  state.lang = state.lang === 'zh' ? 'en' : 'zh';
  const u = new URL(location.href);
  u.searchParams.set('lang', state.lang);
  history.replaceState(null, '', u);
  applyLanguage();
});

// ---- the WebAssembly module ----------------------------------------------

async function loadEngine() {
  const go = new Go();
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

async function fetchText(url) {
  const r = await fetch(url, { cache: 'no-store', credentials: 'omit' });
  if (!r.ok) throw new Error(url + ': HTTP ' + r.status);
  return (await r.text()).trim();
}

// loadBundle takes the pin on first use from the origin the page came from,
// then accepts a fetched bundle only if it opens under that pin and is not
// older than the one held (no rollback). Offline, the held bundle is used.
async function loadBundle() {
  let pin = localStorage.getItem(K_PIN) || '';
  let jws = localStorage.getItem(K_BUNDLE) || '';
  const now = Date.now();
  const held = jws && pin ? healthcode.openBundle(jws, pin, now) : null;
  try {
    if (!pin) pin = await fetchText(PIN_URL);
    const fresh = await fetchText(BUNDLE_URL);
    const info = healthcode.openBundle(fresh, pin, now);
    if (info.ok || info.reason === 'bundle_expired') {
      if (!held || !held.ok || held.reason === 'bundle_expired' || info.seq >= held.seq) {
        jws = fresh;
        localStorage.setItem(K_PIN, pin);
        localStorage.setItem(K_BUNDLE, jws);
      }
    } else if (!held) {
      // Nothing held and what came does not open: show why, keep nothing.
      state.jws = ''; state.pin = ''; state.info = info;
      return;
    }
    state.offline = false;
  } catch (e) {
    state.offline = true;
  }
  state.jws = jws;
  state.pin = jws ? pin : '';
  state.info = jws ? healthcode.openBundle(jws, pin, now) : { ok: false, reason: 'no_bundle' };
}

function bundleState(now) {
  const i = state.info;
  if (!i) return 'loading';
  if (i.ok && i.expired) return 'expired';
  if (!i.ok) return i.reason === 'bundle_expired' ? 'expired' : (i.reason === 'no_bundle' ? 'none' : 'invalid');
  return now >= i.staleAfter ? 'stale' : 'ok';
}

function age(ms) {
  const rtf = new Intl.RelativeTimeFormat(state.lang === 'zh' ? 'zh-Hans' : 'en', { numeric: 'auto' });
  const s = Math.round(ms / 1000);
  if (s < 60) return rtf.format(-s, 'second');
  if (s < 3600) return rtf.format(-Math.round(s / 60), 'minute');
  if (s < 86400) return rtf.format(-Math.round(s / 3600), 'hour');
  return rtf.format(-Math.round(s / 86400), 'day');
}

function renderBundle() {
  const now = Date.now();
  const bs = bundleState(now);
  document.body.dataset.bundle = bs;
  const el = $('bundle-status');
  const lines = [];
  if (bs === 'loading') lines.push(t('bundleLoading'));
  if (state.info && state.info.issuedAt) lines.push(t('bundleAge', { age: age(now - state.info.issuedAt) }));
  if (state.offline && state.jws) lines.push(t('bundleOffline'));
  if (bs === 'stale') lines.push(t('bundleStale'));
  if (bs === 'expired') lines.push(t('bundleExpired'));
  if (bs === 'none') lines.push(t('bundleNone'));
  if (bs === 'invalid') lines.push(t('bundleInvalid'));
  el.textContent = lines.join(' ');
  el.className = bs;
}

// ---- counts (only when the policy allows them and the venue turns them on) --

function today() {
  const d = new Date();
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

function formatTime(ms) {
  return new Intl.DateTimeFormat(state.lang === 'zh' ? 'zh-Hans' : 'en', { dateStyle: 'medium', timeStyle: 'short' }).format(new Date(ms));
}

// check verifies text and shows the verdict. started is the performance.now()
// at which the frame holding it was grabbed (or the user acted).
function check(text, started) {
  const t0 = performance.now();
  const v = healthcode.verify(text, state.jws, state.pin, Date.now());
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

function showResult(kind, v) {
  const r = $('result');
  r.dataset.verdict = kind;
  r.dataset.reason = v.valid ? '' : v.reason;
  $('result-symbol').textContent = SYMBOL[kind];
  $('result-word').textContent = t(kind);
  $('result-detail').textContent = v.valid ? t('validUntil', { time: formatTime(v.expires) }) : t('reason_' + v.reason);
  // The hint is only there when the policy turns it on (the module refuses
  // a token carrying one otherwise).
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
  state.lastClearedAt = performance.now();
}

$('result').addEventListener('click', clearResult);

// ---- camera ----------------------------------------------------------------

function renderCamera() {
  document.body.dataset.camera = state.camera;
  const msg = { denied: 'cameraDenied', none: 'cameraNone', error: 'cameraError' }[state.camera];
  $('fallback').hidden = !msg;
  $('scanner').hidden = !!msg;
  $('camera-message').textContent = msg ? t(msg) : '';
  if (state.camera === 'starting') $('scan-hint').textContent = t('cameraStarting');
  else $('scan-hint').textContent = t('pointCamera');
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

function grab(source, sw, sh) {
  const scale = Math.min(1, MAX_FRAME_SIDE / Math.max(sw, sh));
  const w = Math.max(1, Math.round(sw * scale));
  const h = Math.max(1, Math.round(sh * scale));
  const canvas = $('frame');
  if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.drawImage(source, 0, 0, w, h);
  return ctx.getImageData(0, 0, w, h);
}

function decodeFrame(img) {
  const t0 = performance.now();
  const text = healthcode.decode(img.data, img.width, img.height);
  const ms = performance.now() - t0;
  metrics.frames++;
  metrics.decodeMsTotal += ms;
  metrics.lastDecodeMs = ms;
  if (ms > metrics.decodeMsMax) metrics.decodeMsMax = ms;
  return text;
}

let scanTimer = 0;
function scheduleScan() {
  clearTimeout(scanTimer);
  scanTimer = setTimeout(scanOnce, SCAN_INTERVAL_MS);
}

function scanOnce() {
  if (state.camera !== 'on' || !state.stream) return;
  const video = $('video');
  if (!state.showing && !document.hidden && video.readyState >= 2 && video.videoWidth > 0) {
    const started = performance.now();
    const img = grab(video, video.videoWidth, video.videoHeight);
    metrics.lastGrabMs = performance.now() - started;
    const text = decodeFrame(img);
    const again = text && text === state.lastText && started - state.lastClearedAt < SAME_CODE_MS;
    if (text && !again) {
      state.lastText = text;
      check(text, started);
    }
  }
  scheduleScan();
}

document.addEventListener('visibilitychange', () => {
  if (document.hidden) { stopCamera(); state.camera = 'starting'; }
  else if (document.body.dataset.engine === 'ready') startCamera();
});

// ---- fallback: a photo or pasted text -------------------------------------

$('file').addEventListener('change', async (ev) => {
  const f = ev.target.files && ev.target.files[0];
  ev.target.value = '';
  if (!f) return;
  const started = performance.now();
  let text = '';
  try {
    const bmp = await createImageBitmap(f);
    text = decodeFrame(grab(bmp, bmp.width, bmp.height));
    bmp.close();
  } catch { text = ''; }
  if (text) check(text, started);
  else $('camera-message').textContent = t('noCodeInImage');
});

$('check').addEventListener('click', () => {
  const box = $('paste');
  const text = box.value.trim();
  box.value = '';
  if (text) check(text, performance.now());
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
  await loadBundle();
  renderBundle();
  renderCounts();
  setInterval(renderBundle, 60 * 1000);
  startCamera();
}

main();

// The door screen: one fresh copy of the token for the current window, full
// screen, as a QR. The copy is marked used and its text forgotten before it
// reaches the screen, so no copy is ever shown twice.
import { nowSec } from './common/clock.js';
import { sweep, save, summary } from './store.js';
import { $, t, tx, when, colourWord, para, SYMBOLS } from './ui.js';

let doorTimer = 0;
let shown = null; // the copy on the door screen, in memory only
let doorLines = null;
let wakeLock = null;
let changed = () => {};

export function onDoorChange(fn) { changed = fn; }
export const isOpen = () => !$('door').hidden;

export function openDoor() {
  const w = sweep();
  const s = nowSec();
  $('app').inert = true;
  $('door').hidden = false;
  shown = null;
  doorLines = null;
  if (!w) return doorMessage([['door.none']]);
  const sum = summary(w, s);
  if (sum.unusedNow.length === 0) {
    const lines = [];
    if (sum.valid.length) lines.push(['door.usedUp', { n: sum.valid.length }]);
    if (sum.nextStart) lines.push([sum.valid.length ? 'door.nextAt' : 'door.notYet', { time: when(sum.nextStart) }]);
    else if (sum.valid.length) lines.push(['door.getNew']);
    else lines.push(['door.none']);
    return doorMessage(lines);
  }
  // Use the copy that expires first.
  sum.unusedNow.sort((a, b) => a.exp - b.exp);
  const c = sum.unusedNow[0];
  shown = { t: c.t, exp: c.exp, colour: w.colour };
  c.used = true;
  c.t = '';
  save(w);
  setBanner(w.colour);
  $('door-qr').hidden = false;
  $('door-info').hidden = false;
  $('door-msg').hidden = true;
  drawQR($('qr-canvas'), shown.t);
  updateDoor();
  clearInterval(doorTimer);
  doorTimer = setInterval(updateDoor, 1000);
  requestWakeLock();
  enterFullscreen();
  $('door-close').focus();
  changed();
}

// A message screen has no colour banner: without a QR there is nothing a
// venue could check, so it must not look like a code.
function doorMessage(lines) {
  doorLines = lines;
  setBanner(null);
  $('door-qr').hidden = true;
  $('door-info').hidden = true;
  const msg = $('door-msg');
  msg.hidden = false;
  msg.setAttribute('role', 'status');
  msg.textContent = '';
  for (const [key, params] of lines) msg.append(para(t(key, params)));
  $('door-close').focus();
}

function setBanner(colour) {
  $('door-banner').className = 'banner ' + (colour || 'none');
  $('door-symbol').textContent = colour ? SYMBOLS[colour] : '';
  $('door-word').textContent = colour ? colourWord(colour) : t('title');
}

export function updateDoor() {
  if (!shown) return;
  const left = shown.exp - nowSec();
  if (left <= 0) {
    shown = null;
    clearInterval(doorTimer);
    const c = $('qr-canvas');
    c.width = 0; c.height = 0;
    doorMessage([['door.expired']]);
    return;
  }
  const until = when(shown.exp);
  $('door-left').textContent = t('door.left', { left: tx.duration(left) });
  $('door-until').textContent = t('door.until', { until });
  $('door-qr').setAttribute('aria-label', t('door.label', { colour: colourWord(shown.colour), until, left: tx.duration(left) }));
}

// relabel redraws the door's words after a language switch.
export function relabel() {
  if (shown) { setBanner(shown.colour); updateDoor(); } else if (doorLines) doorMessage(doorLines);
}

export function closeDoor() {
  clearInterval(doorTimer);
  shown = null;
  doorLines = null;
  const c = $('qr-canvas');
  c.width = 0; c.height = 0; // the shown copy leaves the screen for good
  $('door-qr').setAttribute('aria-label', '');
  $('door').hidden = true;
  $('app').inert = false;
  if (wakeLock) { wakeLock.release().catch(() => {}); wakeLock = null; }
  if (document.fullscreenElement && document.exitFullscreen) document.exitFullscreen().catch(() => {});
  changed();
  $('show').focus();
}

// Hide the browser's own bars too, where the browser allows it (an
// installed app already has none).
function enterFullscreen() {
  const el = document.documentElement;
  if (document.fullscreenElement || !el.requestFullscreen) return;
  el.requestFullscreen({ navigationUI: 'hide' }).catch(() => {});
}

function requestWakeLock() {
  if (!('wakeLock' in navigator)) return;
  navigator.wakeLock.request('screen').then((l) => { wakeLock = l; }).catch(() => {});
}

// Byte mode, level M, 4-module quiet zone, an integer number of device
// pixels per module so every edge is sharp.
function drawQR(canvas, text) {
  const q = window.qrcode(0, 'M');
  q.addData(text, 'Byte');
  q.make();
  const n = q.getModuleCount();
  const quiet = 4;
  const total = n + 2 * quiet;
  const box = $('door-qr');
  const avail = Math.max(total, Math.min(box.clientWidth, box.clientHeight));
  const dpr = window.devicePixelRatio || 1;
  const mod = Math.max(1, Math.floor((avail * dpr) / total));
  const px = mod * total;
  canvas.width = px;
  canvas.height = px;
  canvas.style.width = px / dpr + 'px';
  canvas.style.height = px / dpr + 'px';
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, px, px);
  ctx.fillStyle = '#000';
  for (let r = 0; r < n; r++) {
    for (let c = 0; c < n; c++) {
      if (q.isDark(r, c)) ctx.fillRect((c + quiet) * mod, (r + quiet) * mod, mod, mod);
    }
  }
}

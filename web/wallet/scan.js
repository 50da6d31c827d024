// Reading a lab's QR: the camera, or a photo. The browser's BarcodeDetector
// where it reads QR codes (Android Chrome), otherwise the vendored jsQR,
// loaded on first use; both through the shared reader, which also tries the
// frame's centre scaled up so a small code is read too.
import { FrameReader, scanRegions, photoRegions } from './common/qrread.js';
import { $, t, say } from './ui.js';

let detector = null;
let jsQRLoading = null;

async function nativeDetector() {
  if (detector === null && 'BarcodeDetector' in window) {
    try {
      const formats = await window.BarcodeDetector.getSupportedFormats();
      detector = formats.includes('qr_code') ? new window.BarcodeDetector({ formats: ['qr_code'] }) : false;
    } catch (e) { detector = false; }
  }
  return detector || null;
}

function loadJsQR() {
  if (!jsQRLoading) {
    jsQRLoading = new Promise((resolve, reject) => {
      const s = document.createElement('script');
      s.src = 'vendor/jsQR.js';
      s.onload = () => resolve();
      s.onerror = () => { jsQRLoading = null; reject(new Error('jsQR')); };
      document.head.append(s);
    });
  }
  return jsQRLoading;
}

const jsDecode = (img) => {
  const res = window.jsQR(img.data, img.width, img.height, { inversionAttempts: 'attemptBoth' });
  return res ? res.data : '';
};

const scratch = document.createElement('canvas');

// decode reads a QR from a drawable; regions come from the shared reader.
async function decode(source, w, h, maxSide, regions) {
  const d = await nativeDetector();
  if (d) {
    const found = await d.detect(source);
    return found.length ? found[0].rawValue : '';
  }
  await loadJsQR();
  return new FrameReader(scratch, jsDecode, maxSide).readAny(source, regions);
}

let onText = () => {};
export function onCode(fn) { onText = fn; }

export async function onFile(ev) {
  const file = ev.target.files && ev.target.files[0];
  ev.target.value = '';
  if (!file) return;
  let bmp;
  try { bmp = await createImageBitmap(file); } catch (e) { say(t('msg.noQR'), true); return; }
  let text = '';
  try { text = await decode(bmp, bmp.width, bmp.height, 1600, photoRegions(bmp.width, bmp.height)); } catch (e) { text = ''; }
  if (bmp.close) bmp.close();
  if (!text) { say(t('msg.noQR'), true); return; }
  onText(text);
}

let stream = null;
let scanning = false;

export async function startCamera() {
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) { say(t('msg.noCamera'), true); return; }
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: { ideal: 'environment' } }, audio: false });
  } catch (e) {
    say(t('msg.noCamera'), true);
    return;
  }
  const video = $('video');
  video.srcObject = stream;
  $('camera').hidden = false;
  $('scan').hidden = true;
  say(t('camera.looking'));
  try { await video.play(); } catch (e) { /* autoplay of a muted stream is allowed; keep going */ }
  scanning = true;
  scanLoop();
}

async function scanLoop() {
  const video = $('video');
  let n = 0;
  while (scanning) {
    if (video.readyState >= 2 && video.videoWidth) {
      const regions = scanRegions(video.videoWidth, video.videoHeight);
      let text = '';
      try { text = await decode(video, video.videoWidth, video.videoHeight, 800, [regions[n++ % regions.length]]); } catch (e) { text = ''; }
      if (!scanning) return;
      if (text) {
        stopCamera();
        onText(text);
        return;
      }
    }
    await new Promise((r) => setTimeout(r, 150));
  }
}

export function stopCamera() {
  scanning = false;
  if (stream) { for (const tr of stream.getTracks()) tr.stop(); }
  stream = null;
  $('video').srcObject = null;
  $('camera').hidden = true;
  $('scan').hidden = false;
}

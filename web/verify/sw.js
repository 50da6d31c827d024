// Service worker: keeps the app and the last trust bundle so the verifier
// works offline. The app's files are served from the cache and refreshed in
// the background; the bundle and pin go to the network first and fall back
// to the cached copy. Nothing else is ever cached: scanning makes no request.
'use strict';

const APP_CACHE = 'healthcode-verify-app';
const BUNDLE_CACHE = 'healthcode-verify-bundle';
const APP_FILES = [
  './', 'index.html', 'app.js', 'i18n.js', 'style.css', 'manifest.webmanifest',
  'wasm_exec.js', 'verifier.wasm', 'icons/icon.svg', 'icons/icon-192.png', 'icons/icon-512.png',
];
const TRUST_PATHS = ['/.well-known/healthcode/bundle', '/.well-known/healthcode/pin'];

self.addEventListener('install', (ev) => {
  ev.waitUntil(caches.open(APP_CACHE).then((c) => c.addAll(APP_FILES)).then(() => self.skipWaiting()));
});

self.addEventListener('activate', (ev) => {
  ev.waitUntil(self.clients.claim());
});

self.addEventListener('fetch', (ev) => {
  const req = ev.request;
  if (req.method !== 'GET') return;
  const url = new URL(req.url);
  if (url.origin !== self.location.origin) return;
  if (TRUST_PATHS.includes(url.pathname)) {
    ev.respondWith(networkFirst(req, url.pathname));
    return;
  }
  const scope = new URL(self.registration.scope);
  if (url.pathname.startsWith(scope.pathname)) ev.respondWith(cacheFirst(req, ev));
});

// networkFirst keys the cache by path alone: one bundle, the last one.
async function networkFirst(req, key) {
  const cache = await caches.open(BUNDLE_CACHE);
  try {
    const resp = await fetch(req);
    if (resp.ok) await cache.put(key, resp.clone());
    return resp;
  } catch (e) {
    const hit = await cache.match(key);
    if (hit) return hit;
    throw e;
  }
}

async function cacheFirst(req, ev) {
  const cache = await caches.open(APP_CACHE);
  // ?lang= only picks the language; the page is the same.
  const hit = await cache.match(req, { ignoreSearch: true });
  const refresh = fetch(req).then((resp) => {
    if (resp.ok) return cache.put(req.url.split('?')[0], resp.clone()).then(() => resp);
    return resp;
  });
  if (hit) {
    ev.waitUntil(refresh.catch(() => {}));
    return hit;
  }
  return refresh;
}

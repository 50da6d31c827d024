// Service worker for the resident wallet: keeps the app shell so the door
// screen opens in airplane mode. It answers GETs inside its own scope only;
// POST /v1/tokens is outside the scope and never touches this worker.
//
// Shell files are served from the cache first and refreshed in the
// background (stale-while-revalidate), so a fixed page reaches phones on
// their next load without anyone remembering to bump a version here.
'use strict';

const CACHE = 'healthcode-wallet-v1';
const SHELL = [
  './',
  'app.js',
  'style.css',
  'manifest.json',
  'vendor/qrcode.js',
  'vendor/jsQR.js',
  'icons/icon-192.png',
  'icons/icon-512.png',
];

self.addEventListener('install', (event) => {
  event.waitUntil(
    caches.open(CACHE)
      .then((c) => c.addAll(SHELL.map((u) => new Request(u, { cache: 'reload' }))))
      .then(() => self.skipWaiting()),
  );
});

self.addEventListener('activate', (event) => {
  event.waitUntil(
    caches.keys()
      .then((keys) => Promise.all(keys.filter((k) => k.startsWith('healthcode-wallet-') && k !== CACHE).map((k) => caches.delete(k))))
      .then(() => self.clients.claim()),
  );
});

self.addEventListener('fetch', (event) => {
  const req = event.request;
  if (req.method !== 'GET') return;
  const url = new URL(req.url);
  const scope = new URL(self.registration.scope);
  if (url.origin !== scope.origin || !url.pathname.startsWith(scope.pathname)) return;
  // Every page of the app is index.html: "/wallet/", "/wallet/index.html",
  // with or without a query.
  const key = req.mode === 'navigate' ? new Request(scope.href) : req;
  event.respondWith((async () => {
    const cache = await caches.open(CACHE);
    const hit = await cache.match(key, { ignoreSearch: true });
    const refresh = fetch(key.url, { cache: 'no-cache', credentials: 'same-origin' })
      .then((res) => {
        // Only whole, same-origin answers replace the shell; a redirect or an
        // error page must not.
        if (res.ok && res.type === 'basic' && !res.redirected) return cache.put(key, res.clone()).then(() => res);
        return res;
      });
    if (hit) {
      event.waitUntil(refresh.catch(() => {}));
      return hit;
    }
    return refresh;
  })());
});

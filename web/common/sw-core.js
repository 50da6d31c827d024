// The service-worker core both apps share (importScripts from each sw.js).
// It keeps an app's shell so the app opens offline:
//  - shell files come from the cache first and are refreshed in the
//    background (stale-while-revalidate), so a fixed page reaches phones
//    on their next load without anyone bumping a version;
//  - only whole, same-origin answers replace a cached file: a redirect or
//    an error page never does;
//  - every page of the app is its index.html ("/app/", "/app/index.html",
//    with or without a query);
//  - listed network-first paths (the verifier's trust bundle and pin) go to
//    the network and fall back to the last good copy, keyed by path alone
//    and marked X-Healthcode-Saved-Copy: 1;
//  - nothing else is answered: POSTs and other origins pass through.
'use strict';

// healthcodeShell installs the worker. cfg: {cache, files, networkFirst:
// {cache, paths}, prefix} where prefix names the caches this app owns
// (older ones are deleted on activation).
self.healthcodeShell = function healthcodeShell(cfg) {
  const keep = [cfg.cache].concat(cfg.networkFirst ? [cfg.networkFirst.cache] : []);
  const nfPaths = cfg.networkFirst ? cfg.networkFirst.paths : [];

  const cacheable = (res) => res.ok && res.type === 'basic' && !res.redirected;

  self.addEventListener('install', (event) => {
    event.waitUntil((async () => {
      const cache = await caches.open(cfg.cache);
      // Fetched one by one, so a redirected file is refused, not cached.
      await Promise.all(cfg.files.map(async (u) => {
        const res = await fetch(new Request(u, { cache: 'reload', credentials: 'same-origin' }));
        if (!cacheable(res)) throw new Error('sw: cannot cache ' + u + ': HTTP ' + res.status + (res.redirected ? ' (redirected)' : ''));
        await cache.put(u === './' ? new URL(self.registration.scope).href : u, res);
      }));
      await self.skipWaiting();
    })());
  });

  self.addEventListener('activate', (event) => {
    event.waitUntil(
      caches.keys()
        .then((keys) => Promise.all(keys.filter((k) => k.startsWith(cfg.prefix) && !keep.includes(k)).map((k) => caches.delete(k))))
        .then(() => self.clients.claim()),
    );
  });

  self.addEventListener('fetch', (event) => {
    const req = event.request;
    if (req.method !== 'GET') return;
    const url = new URL(req.url);
    if (url.origin !== self.location.origin) return;
    if (nfPaths.includes(url.pathname)) {
      event.respondWith(networkFirst(req, url.pathname));
      return;
    }
    const scope = new URL(self.registration.scope);
    if (!url.pathname.startsWith(scope.pathname)) return;
    const key = req.mode === 'navigate' || url.pathname === scope.pathname + 'index.html' ? new Request(scope.href) : new Request(url.origin + url.pathname);
    event.respondWith(shellFirst(key, event));
  });

  async function shellFirst(key, event) {
    const cache = await caches.open(cfg.cache);
    const hit = await cache.match(key, { ignoreSearch: true });
    const refresh = fetch(key.url, { cache: 'no-cache', credentials: 'same-origin' })
      .then((res) => (cacheable(res) ? cache.put(key, res.clone()).then(() => res) : res));
    if (hit) {
      event.waitUntil(refresh.catch(() => {}));
      return hit;
    }
    return refresh;
  }

  async function networkFirst(req, key) {
    const cache = await caches.open(cfg.networkFirst.cache);
    try {
      const res = await fetch(req);
      if (cacheable(res)) await cache.put(key, res.clone());
      return res;
    } catch (e) {
      const hit = await cache.match(key);
      if (!hit) throw e;
      // Marked, so the page can tell a saved copy from a fresh fetch.
      const headers = new Headers(hit.headers);
      headers.set('X-Healthcode-Saved-Copy', '1');
      return new Response(await hit.blob(), { status: hit.status, statusText: hit.statusText, headers });
    }
  }
};

// Service worker: keeps the app and the last trust bundle so the verifier
// works offline. The app's files are served from the cache and refreshed in
// the background; the bundle and pin go to the network first and fall back
// to the cached copy. Nothing else is ever cached: scanning makes no
// request. The caching rules are the shared core's.
'use strict';

importScripts('common/sw-core.js');

self.healthcodeShell({
  prefix: 'healthcode-verify-',
  cache: 'healthcode-verify-app',
  // './' is index.html (a file server redirects index.html to ./).
  files: [
    './', 'app.js', 'i18n.js', 'style.css', 'manifest.webmanifest',
    'wasm_exec.js', 'verifier.wasm', 'icons/icon.svg', 'icons/icon-192.png', 'icons/icon-512.png',
    'common/clock.js', 'common/i18n.js', 'common/qrread.js', 'common/sw-core.js',
  ],
  networkFirst: {
    cache: 'healthcode-verify-bundle',
    paths: ['/.well-known/healthcode/bundle', '/.well-known/healthcode/pin'],
  },
});

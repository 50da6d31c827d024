// Service worker for the resident wallet: keeps the app shell so the door
// screen opens in airplane mode. POST /v1/tokens is outside its scope and
// never touches it. The caching rules are the shared core's.
'use strict';

importScripts('common/sw-core.js');

self.healthcodeShell({
  prefix: 'healthcode-wallet-',
  cache: 'healthcode-wallet-v2',
  files: [
    './',
    'app.js', 'texts.js', 'ui.js', 'store.js', 'protocol.js', 'renewal.js', 'scan.js', 'door.js', 'home.js',
    'common/clock.js', 'common/i18n.js', 'common/qrread.js', 'common/sw-core.js',
    'style.css', 'manifest.json',
    'vendor/qrcode.js', 'vendor/jsQR.js',
    'icons/icon-192.png', 'icons/icon-512.png',
  ],
});

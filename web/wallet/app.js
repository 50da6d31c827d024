// Healthcode resident wallet.
//
// The page talks to one endpoint, once per redemption: POST ../v1/tokens on
// the origin it was served from. The returned batch lives in localStorage on
// this phone and nowhere else. Showing a code needs no network.
//
// Time: every reading of the clock goes through now(). A test (or a person
// checking the page) may set window.__healthcodeNow to a number of Unix
// milliseconds, or to a function returning one, to move the page's clock;
// set it before load (CDP Page.addScriptToEvaluateOnNewDocument) to test the
// sweep on load, or set it and fire a "focus" event to test the periodic one.
'use strict';

(function () {
  const STORE_KEY = 'healthcode.wallet.v1';
  const LANG_KEY = 'healthcode.lang';
  const TICK_MS = 15000; // sweep and refresh interval
  const LOW_SECONDS = 24 * 3600; // "running out" threshold
  const MAX_ATTESTATION = 2048; // attestation.MaxLen
  const MAX_TOKEN = 1024; // token.MaxLen
  const JWS = /^[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+$/;
  const COLOURS = ['green', 'yellow', 'red'];
  const SYMBOLS = { green: '✓', yellow: '!', red: '✕' };

  function now() {
    const o = window.__healthcodeNow;
    if (typeof o === 'function') return Number(o());
    if (typeof o === 'number') return o;
    return Date.now();
  }
  const nowSec = () => Math.floor(now() / 1000);

  // ---- text ---------------------------------------------------------------

  const TEXT = {
    en: {
      title: 'Health code',
      loading: 'Loading…',
      'lang.other': '中文',
      'lang.otherLabel': '中文 – switch to Chinese',
      'status.h': 'Your code',
      'status.none': 'You have no codes yet. Add a test result below to get them.',
      'status.until': 'Valid until {until}.',
      'status.count': '{n} unused codes left.',
      'status.waiting': 'Your codes start at {time}.',
      'status.windowUsed': 'You have shown all codes for this time period. New codes start at {time}.',
      'status.allUsed': 'You have shown all your codes. Get a new test and add the result below.',
      'warn.low': 'Your codes run out in {left}. Get a new test and add the result here to keep a valid code.',
      'colour.green': 'Green', 'colour.yellow': 'Yellow', 'colour.red': 'Red',
      show: 'Show my code at the door',
      'add.h': 'Add a test result',
      'add.intro': 'The lab gives you your result as a QR code or as text. Add it in one of these ways:',
      scan: "Scan the lab's QR code with the camera",
      'camera.stop': 'Stop camera',
      'camera.looking': 'Point the camera at the QR code from the lab.',
      photo: 'Choose a photo of the QR code',
      'paste.label': 'Or paste the text from the lab',
      'paste.add': 'Add',
      'pending.h': 'Ready to send',
      'pending.none': 'Nothing added yet.',
      'pending.item': '{kind}, {date}',
      'pending.unknown': 'Result',
      remove: 'Remove',
      'remove.label': 'Remove {item}',
      redeem: 'Get my codes',
      note: 'Only the results you add are sent, once, to the health-code service. Your codes stay on this phone; showing them needs no internet.',
      'kind.test-negative': 'Negative test',
      'kind.test-positive': 'Positive test',
      'kind.vaccination': 'Vaccination',
      'kind.recovery': 'Recovery',
      'kind.exposure-notice': 'Exposure notice',
      'kind.isolation-order': 'Isolation order',
      'msg.added': 'Added: {item}. Press “Get my codes” when you have added everything.',
      'msg.notAttestation': "That is not a test result from a lab. Check that you have the lab's code and try again.",
      'msg.duplicate': 'You have already added this result.',
      'msg.noQR': 'No QR code found in that picture. Try a sharper, closer photo, or paste the text.',
      'msg.noCamera': "This phone or browser won't let the page use the camera. Choose a photo of the QR code or paste the text instead.",
      'msg.nothing': 'Add a test result first.',
      'msg.sending': 'Sending your test result…',
      'msg.success': 'Done. You have {n} codes: {colour} {symbol}, valid until {until}.',
      'msg.replaced': 'Your new codes replace the old ones.',
      'msg.allExpired': "The codes you received have already expired. Check that your phone's date and time are right.",
      'err.already_redeemed': 'This test result has already been used to get codes, and each result can be used only once. If you lost your codes, or it was not you, get a new test.',
      'err.attestation_expired': 'This test result is too old to use. Get a new test and add the new result.',
      'err.unknown_attester': "This result comes from a lab the health-code service doesn't recognise. Ask the lab whether it is registered, or get tested at a registered lab.",
      'err.bad_signature': "This result could not be confirmed as genuine; it may have been copied wrongly. Scan the lab's QR code again, or ask the lab.",
      'err.attestation_in_future': "This result is dated in the future, so it can't be used yet. Check your phone's date and time, or ask the lab to check theirs.",
      'err.claim_not_allowed': 'This result contains personal details the service does not accept. Ask the lab for a standard health-code result.',
      'err.malformed_request': "That doesn't look like a lab result. Scan the lab's QR code again, or paste the whole text.",
      'err.too_many_attestations': 'That is too many results at once. Remove some and try again.',
      'err.body_too_large': 'That is too much to send at once. Remove some results and try again.',
      'err.rate_limited': 'The service is busy. Wait a minute, then try again.',
      'err.unreachable': 'Could not reach the health-code service. Check your internet connection and try again. The codes already on this phone still work without internet.',
      'err.server': 'The health-code service had a problem. Try again later.',
      'err.badAnswer': "The service's answer could not be read. Try again later.",
      'err.storage': "This browser won't let the page keep your codes, so nothing was sent. Turn off private browsing and try again.",
      'door.close': 'Close',
      'door.left': '{left} left',
      'door.until': 'Valid until {until}',
      'door.once': 'Each time you open this screen, it shows a new code.',
      'door.label': 'Health code: {colour}. Valid until {until}, {left} left.',
      'door.usedUp': 'You have shown all {n} codes for this time period. Each code is shown only once, so venues cannot link your visits.',
      'door.nextAt': 'New codes start at {time}. Open this screen again then.',
      'door.getNew': 'To get more codes, get a new test and add the result on the main screen.',
      'door.notYet': 'Your codes start at {time}. Open this screen again then.',
      'door.none': 'You have no valid code. Get a test and add the result on the main screen.',
      'door.expired': 'This code has expired. Close this screen and open it again for a new one.',
      'dur.lessMinute': 'less than a minute',
      'dur.days': ['{n} day', '{n} days'],
      'dur.hours': ['{n} hour', '{n} hours'],
      'dur.minutes': ['{n} minute', '{n} minutes'],
      'dur.join': ' ',
    },
    zh: {
      title: '健康码',
      loading: '正在加载……',
      'lang.other': 'English',
      'lang.otherLabel': 'English – 切换到英文',
      'status.h': '我的健康码',
      'status.none': '您还没有健康码。请在下方添加检测结果以领取。',
      'status.until': '有效期至 {until}。',
      'status.count': '还剩 {n} 个未使用的码。',
      'status.waiting': '您的健康码将于 {time} 起生效。',
      'status.windowUsed': '本时段的码已全部出示。新码将于 {time} 起可用。',
      'status.allUsed': '您的码已全部出示。请重新检测，并在下方添加结果。',
      'warn.low': '您的健康码将在 {left}后用完。请重新检测，并在此添加新结果，以保持有效的健康码。',
      'colour.green': '绿码', 'colour.yellow': '黄码', 'colour.red': '红码',
      show: '出示健康码',
      'add.h': '添加检测结果',
      'add.intro': '检测机构会以二维码或文字形式提供您的结果。请用以下任一方式添加：',
      scan: '用相机扫描检测机构的二维码',
      'camera.stop': '关闭相机',
      'camera.looking': '请将相机对准检测机构的二维码。',
      photo: '选择二维码照片',
      'paste.label': '或粘贴检测机构提供的文字',
      'paste.add': '添加',
      'pending.h': '待提交',
      'pending.none': '尚未添加。',
      'pending.item': '{kind}，{date}',
      'pending.unknown': '检测结果',
      remove: '移除',
      'remove.label': '移除{item}',
      redeem: '领取健康码',
      note: '只有您添加的检测结果会被发送一次到健康码服务。健康码只保存在本手机上，出示时无需联网。',
      'kind.test-negative': '阴性检测',
      'kind.test-positive': '阳性检测',
      'kind.vaccination': '疫苗接种',
      'kind.recovery': '康复证明',
      'kind.exposure-notice': '密接通知',
      'kind.isolation-order': '隔离通知',
      'msg.added': '已添加：{item}。全部添加后，请点击“领取健康码”。',
      'msg.notAttestation': '这不是检测机构出具的检测结果。请确认您拿到的是检测机构的二维码后重试。',
      'msg.duplicate': '您已添加过此结果。',
      'msg.noQR': '图片中未找到二维码。请换一张更清晰、更近的照片，或粘贴文字。',
      'msg.noCamera': '此手机或浏览器不允许本页面使用相机。请改为选择二维码照片或粘贴文字。',
      'msg.nothing': '请先添加检测结果。',
      'msg.sending': '正在提交检测结果……',
      'msg.success': '完成。您共有 {n} 个码：{colour} {symbol}，有效期至 {until}。',
      'msg.replaced': '新码已替换旧码。',
      'msg.allExpired': '收到的健康码已过期。请检查手机的日期和时间是否正确。',
      'err.already_redeemed': '此检测结果已被用于领取健康码，每个结果只能使用一次。如果您的健康码丢失，或并非您本人操作，请重新检测。',
      'err.attestation_expired': '此检测结果已过期，无法使用。请重新检测并添加新的结果。',
      'err.unknown_attester': '此结果来自健康码服务不认可的检测机构。请向该机构确认是否已登记，或到已登记的机构检测。',
      'err.bad_signature': '无法确认此结果的真实性，可能复制有误。请重新扫描检测机构的二维码，或咨询该机构。',
      'err.attestation_in_future': '此结果的日期晚于当前时间，暂时无法使用。请检查手机的日期和时间，或请检测机构核对其时间。',
      'err.claim_not_allowed': '此结果包含本服务不接受的个人信息。请向检测机构索取标准的健康码检测结果。',
      'err.malformed_request': '这看起来不像检测结果。请重新扫描检测机构的二维码，或粘贴完整文字。',
      'err.too_many_attestations': '一次提交的结果太多。请移除一些后重试。',
      'err.body_too_large': '一次提交的内容太多。请移除一些结果后重试。',
      'err.rate_limited': '服务繁忙。请稍等一分钟后再试。',
      'err.unreachable': '无法连接健康码服务。请检查网络后重试。手机上已有的健康码无需联网即可使用。',
      'err.server': '健康码服务出现问题，请稍后再试。',
      'err.badAnswer': '无法读取服务的回复，请稍后再试。',
      'err.storage': '此浏览器不允许本页面保存健康码，因此没有发送任何内容。请关闭无痕浏览后重试。',
      'door.close': '关闭',
      'door.left': '剩余 {left}',
      'door.until': '有效期至 {until}',
      'door.once': '每次打开此页面都会显示一个新码。',
      'door.label': '健康码：{colour}。有效期至 {until}，剩余 {left}。',
      'door.usedUp': '本时段的 {n} 个码已全部出示。每个码只出示一次，以免场所关联您的行程。',
      'door.nextAt': '新码将于 {time} 起可用，届时请再次打开此页面。',
      'door.getNew': '如需更多码，请重新检测，并在主页面添加结果。',
      'door.notYet': '您的健康码将于 {time} 起生效，届时请再次打开此页面。',
      'door.none': '您没有有效的健康码。请检测，并在主页面添加结果。',
      'door.expired': '此码已过期。请关闭此页面后重新打开，以获取新码。',
      'dur.lessMinute': '不到 1 分钟',
      'dur.days': ['{n} 天', '{n} 天'],
      'dur.hours': ['{n} 小时', '{n} 小时'],
      'dur.minutes': ['{n} 分钟', '{n} 分钟'],
      'dur.join': ' ',
    },
  };

  let lang = pickLanguage();

  function pickLanguage() {
    let saved = null;
    try { saved = localStorage.getItem(LANG_KEY); } catch (e) { /* no storage: follow the browser */ }
    if (saved === 'en' || saved === 'zh') return saved;
    const langs = navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || 'en'];
    for (const l of langs) {
      const p = String(l).toLowerCase();
      if (p.startsWith('zh')) return 'zh';
      if (p.startsWith('en')) return 'en';
    }
    return 'en';
  }

  function t(key, params) {
    let s = TEXT[lang][key];
    if (s === undefined) s = TEXT.en[key];
    if (s === undefined) return key;
    return fill(s, params);
  }

  function fill(s, params) {
    return params ? s.replace(/\{(\w+)\}/g, (m, k) => (k in params ? String(params[k]) : m)) : s;
  }

  function duration(seconds) {
    if (seconds < 60) return t('dur.lessMinute');
    const d = Math.floor(seconds / 86400);
    const h = Math.floor((seconds % 86400) / 3600);
    const m = Math.floor((seconds % 3600) / 60);
    const part = (key, n) => fill(TEXT[lang][key][n === 1 ? 0 : 1], { n: n });
    const parts = [];
    if (d > 0) { parts.push(part('dur.days', d)); if (h > 0) parts.push(part('dur.hours', h)); }
    else if (h > 0) { parts.push(part('dur.hours', h)); if (m > 0) parts.push(part('dur.minutes', m)); }
    else parts.push(part('dur.minutes', m));
    return parts.join(t('dur.join'));
  }

  function locale() { return lang === 'zh' ? 'zh-CN' : 'en-GB'; }

  // A time today shows as "18:00"; another day also shows the date.
  function when(sec) {
    const d = new Date(sec * 1000);
    const today = new Date(now());
    const sameDay = d.toDateString() === today.toDateString();
    const opts = sameDay ? { hour: '2-digit', minute: '2-digit' }
      : { day: 'numeric', month: 'short', hour: '2-digit', minute: '2-digit' };
    return new Intl.DateTimeFormat(locale(), opts).format(d);
  }

  function colourWord(c) { return t('colour.' + c); }

  // ---- storage ------------------------------------------------------------
  // One record: {v:1, colour, copies:[{t, nbf, exp, used}]}. A copy that has
  // been shown keeps only its window (t is emptied), so it can never be
  // shown again and the phone holds nothing that a venue has already seen.

  function load() {
    let raw;
    try { raw = localStorage.getItem(STORE_KEY); } catch (e) { return null; }
    if (!raw) return null;
    try {
      const w = JSON.parse(raw);
      if (w && w.v === 1 && COLOURS.includes(w.colour) && Array.isArray(w.copies)) return w;
    } catch (e) { /* fall through: an unreadable record is dropped */ }
    save(null);
    return null;
  }

  function save(w) {
    try {
      if (w === null) localStorage.removeItem(STORE_KEY);
      else localStorage.setItem(STORE_KEY, JSON.stringify(w));
      return true;
    } catch (e) {
      return false;
    }
  }

  function storageWorks() {
    try {
      localStorage.setItem(STORE_KEY + '.probe', '1');
      localStorage.removeItem(STORE_KEY + '.probe');
      return true;
    } catch (e) {
      return false;
    }
  }

  // Deletes expired copies; the whole record goes with the last one.
  function sweep() {
    const w = load();
    if (!w) return null;
    const s = nowSec();
    const keep = w.copies.filter((c) => c.exp > s);
    if (keep.length === 0) { save(null); return null; }
    if (keep.length !== w.copies.length) { w.copies = keep; save(w); }
    return w;
  }

  // What the wallet holds at time s.
  function summary(w, s) {
    const valid = w.copies.filter((c) => c.nbf <= s && s < c.exp);
    const unusedNow = valid.filter((c) => !c.used);
    const future = w.copies.filter((c) => c.nbf > s);
    const unusedFuture = future.filter((c) => !c.used);
    const unused = w.copies.filter((c) => !c.used);
    const lastExp = unused.length ? Math.max(...unused.map((c) => c.exp)) : 0;
    const nextStart = unusedFuture.length ? Math.min(...unusedFuture.map((c) => c.nbf)) : 0;
    return { valid, unusedNow, unusedFuture, unused, lastExp, nextStart };
  }

  // ---- page ---------------------------------------------------------------

  const $ = (id) => document.getElementById(id);
  const pending = []; // attestations added but not sent: memory only
  let doorTimer = 0;
  let shown = null; // the copy on the door screen, in memory only
  let wakeLock = null;

  function applyText() {
    document.documentElement.lang = lang === 'zh' ? 'zh-Hans' : 'en';
    document.title = t('title');
    for (const el of document.querySelectorAll('[data-i18n]')) el.textContent = t(el.dataset.i18n);
    const b = $('lang');
    b.textContent = t('lang.other');
    b.lang = lang === 'zh' ? 'en' : 'zh-Hans';
    b.setAttribute('aria-label', t('lang.otherLabel'));
  }

  // Messages go to one live region. A repeated message gets a zero-width
  // space toggled on so that screen readers announce it again; data-seq
  // counts messages, so a test can wait for the next one.
  function say(text, isError) {
    const live = $('live');
    live.classList.toggle('error', !!isError);
    live.textContent = live.textContent === text ? text + '\u200b' : text;
    live.dataset.seq = String(Number(live.dataset.seq || 0) + 1);
    live.scrollIntoView({ block: 'nearest' });
  }

  function renderStatus() {
    const w = sweep();
    const body = $('status-body');
    const warn = $('warning');
    body.textContent = '';
    warn.hidden = true;
    if (!w) {
      body.append(chip(null), para(t('status.none')));
      return;
    }
    const s = nowSec();
    const sum = summary(w, s);
    body.append(chip(w.colour));
    if (sum.unused.length === 0) {
      body.append(para(t('status.allUsed')));
      return;
    }
    body.append(para(t('status.until', { until: when(sum.lastExp) })));
    body.append(para(t('status.count', { n: sum.unused.length })));
    if (sum.unusedNow.length === 0 && sum.nextStart) {
      const key = sum.valid.length ? 'status.windowUsed' : 'status.waiting';
      body.append(para(t(key, { time: when(sum.nextStart) })));
    }
    if (sum.lastExp - s < LOW_SECONDS) {
      warn.textContent = t('warn.low', { left: duration(sum.lastExp - s) });
      warn.hidden = false;
    }
  }

  function chip(colour) {
    const d = document.createElement('div');
    d.className = 'chip ' + (colour || 'none');
    d.id = 'status-chip';
    if (colour) {
      const sym = document.createElement('span');
      sym.setAttribute('aria-hidden', 'true');
      sym.textContent = SYMBOLS[colour];
      const word = document.createElement('span');
      word.textContent = colourWord(colour);
      d.append(sym, word);
      d.dataset.colour = colour;
    } else {
      d.textContent = '—';
      d.setAttribute('aria-hidden', 'true');
    }
    return d;
  }

  function para(text) {
    const p = document.createElement('p');
    p.textContent = text;
    return p;
  }

  // ---- adding attestations -------------------------------------------------

  function b64urlJSON(part) {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const bin = atob(b64 + '==='.slice((b64.length + 3) % 4));
    const bytes = Uint8Array.from(bin, (ch) => ch.charCodeAt(0));
    return JSON.parse(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  }

  // Reads the attestation's payload only to name it in the list; the
  // issuer is the one that checks it.
  function describe(raw) {
    let claims;
    try { claims = b64urlJSON(raw.split('.')[1]); } catch (e) { return null; }
    if (!claims || typeof claims !== 'object') return null;
    return { kind: typeof claims.kind === 'string' ? claims.kind : '', at: Number.isInteger(claims.at) ? claims.at : 0 };
  }

  function itemText(p) {
    const kindText = TEXT[lang]['kind.' + p.kind] ? t('kind.' + p.kind) : t('pending.unknown');
    if (!p.at) return kindText;
    return t('pending.item', { kind: kindText, date: when(p.at) });
  }

  function addAttestation(text) {
    const raw = String(text || '').replace(/\s+/g, '');
    if (!raw || raw.length > MAX_ATTESTATION || !JWS.test(raw)) { say(t('msg.notAttestation'), true); return false; }
    const d = describe(raw);
    if (!d) { say(t('msg.notAttestation'), true); return false; }
    if (pending.some((p) => p.raw === raw)) { say(t('msg.duplicate'), true); return false; }
    const p = { raw, kind: d.kind, at: d.at };
    pending.push(p);
    renderPending();
    say(t('msg.added', { item: itemText(p) }));
    return true;
  }

  function renderPending() {
    const ul = $('pending');
    ul.textContent = '';
    pending.forEach((p, i) => {
      const li = document.createElement('li');
      const span = document.createElement('span');
      span.textContent = itemText(p);
      const rm = document.createElement('button');
      rm.type = 'button';
      rm.textContent = t('remove');
      rm.setAttribute('aria-label', t('remove.label', { item: itemText(p) }));
      rm.addEventListener('click', () => { pending.splice(i, 1); renderPending(); $('paste').focus(); });
      li.append(span, rm);
      ul.append(li);
    });
    $('pending-none').hidden = pending.length > 0;
  }

  // QR decoding: the browser's BarcodeDetector where it reads QR codes
  // (Android Chrome), otherwise the vendored jsQR, loaded on first use.
  let detector = null;
  let jsQRLoading = null;

  async function qrReader() {
    if (detector === null && 'BarcodeDetector' in window) {
      try {
        const formats = await window.BarcodeDetector.getSupportedFormats();
        detector = formats.includes('qr_code') ? new window.BarcodeDetector({ formats: ['qr_code'] }) : false;
      } catch (e) { detector = false; }
    }
    if (detector) return { kind: 'native', detector };
    if (!jsQRLoading) {
      jsQRLoading = new Promise((resolve, reject) => {
        const s = document.createElement('script');
        s.src = 'vendor/jsQR.js';
        s.onload = () => resolve();
        s.onerror = () => { jsQRLoading = null; reject(new Error('jsQR')); };
        document.head.append(s);
      });
    }
    await jsQRLoading;
    return { kind: 'js' };
  }

  const scratch = document.createElement('canvas');

  // Decodes a QR from a drawable (video, image bitmap), scaled so the
  // longer side is at most maxSide pixels.
  async function decodeFrom(source, w, h, maxSide) {
    const r = await qrReader();
    if (r.kind === 'native') {
      const found = await r.detector.detect(source);
      return found.length ? found[0].rawValue : null;
    }
    const scale = Math.min(1, maxSide / Math.max(w, h));
    const cw = Math.max(1, Math.round(w * scale));
    const ch = Math.max(1, Math.round(h * scale));
    scratch.width = cw;
    scratch.height = ch;
    const ctx = scratch.getContext('2d', { willReadFrequently: true });
    ctx.drawImage(source, 0, 0, cw, ch);
    const img = ctx.getImageData(0, 0, cw, ch);
    const res = window.jsQR(img.data, cw, ch, { inversionAttempts: 'attemptBoth' });
    return res ? res.data : null;
  }

  async function onFile(ev) {
    const file = ev.target.files && ev.target.files[0];
    ev.target.value = '';
    if (!file) return;
    let bmp;
    try { bmp = await createImageBitmap(file); } catch (e) { say(t('msg.noQR'), true); return; }
    let text = null;
    try { text = await decodeFrom(bmp, bmp.width, bmp.height, 1600); } catch (e) { text = null; }
    if (bmp.close) bmp.close();
    if (text === null) { say(t('msg.noQR'), true); return; }
    addAttestation(text);
  }

  let stream = null;
  let scanning = false;

  async function startCamera() {
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
    while (scanning) {
      if (video.readyState >= 2 && video.videoWidth) {
        let text = null;
        try { text = await decodeFrom(video, video.videoWidth, video.videoHeight, 800); } catch (e) { text = null; }
        if (!scanning) return;
        if (text !== null) {
          stopCamera();
          addAttestation(text);
          return;
        }
      }
      await new Promise((r) => setTimeout(r, 150));
    }
  }

  function stopCamera() {
    scanning = false;
    if (stream) { for (const tr of stream.getTracks()) tr.stop(); }
    stream = null;
    $('video').srcObject = null;
    $('camera').hidden = true;
    $('scan').hidden = false;
  }

  // ---- redemption -----------------------------------------------------------

  function parseBatch(body) {
    if (!body || typeof body !== 'object' || !COLOURS.includes(body.colour) || !Array.isArray(body.tokens) || body.tokens.length === 0) return null;
    const copies = [];
    for (const x of body.tokens) {
      if (!x || typeof x.token !== 'string' || x.token.length > MAX_TOKEN || !JWS.test(x.token)) return null;
      if (!Number.isInteger(x.nbf) || !Number.isInteger(x.exp) || x.exp <= x.nbf) return null;
      copies.push({ t: x.token, nbf: x.nbf, exp: x.exp, used: false });
    }
    return { v: 1, colour: body.colour, copies };
  }

  async function redeem() {
    if (pending.length === 0) { say(t('msg.nothing'), true); return; }
    // Spending an attestation whose tokens could not be kept would lose it.
    if (!storageWorks()) { say(t('err.storage'), true); return; }
    const btn = $('redeem');
    btn.disabled = true;
    say(t('msg.sending'));
    try {
      let res;
      try {
        res = await fetch(new URL('../v1/tokens', location.href), {
          method: 'POST',
          headers: { 'Content-Type': 'application/json' },
          body: JSON.stringify({ attestations: pending.map((p) => p.raw) }),
          credentials: 'omit',
          cache: 'no-store',
          referrerPolicy: 'no-referrer',
          redirect: 'error',
        });
      } catch (e) {
        say(t('err.unreachable'), true);
        return;
      }
      let body = null;
      try { body = await res.json(); } catch (e) { body = null; }
      if (!res.ok) {
        say(errorText(res.status, body), true);
        return;
      }
      const batch = parseBatch(body);
      if (!batch) { say(t('err.badAnswer'), true); return; }
      const had = sweep();
      const replaced = !!(had && had.copies.some((c) => !c.used));
      // The attestations are spent either way: forget them.
      pending.length = 0;
      renderPending();
      batch.copies = batch.copies.filter((c) => c.exp > nowSec());
      if (batch.copies.length === 0) { renderStatus(); say(t('msg.allExpired'), true); return; }
      if (!save(batch)) { say(t('err.storage'), true); return; }
      if (navigator.storage && navigator.storage.persist) navigator.storage.persist().catch(() => {});
      renderStatus();
      const last = Math.max(...batch.copies.map((c) => c.exp));
      let msg = t('msg.success', { n: batch.copies.length, colour: colourWord(batch.colour), symbol: SYMBOLS[batch.colour], until: when(last) });
      if (replaced) msg += ' ' + t('msg.replaced');
      say(msg);
    } finally {
      btn.disabled = false;
    }
  }

  function errorText(status, body) {
    const code = body && body.error && typeof body.error.code === 'string' ? body.error.code : '';
    if (code && TEXT.en['err.' + code] && !['unreachable', 'server', 'badAnswer', 'storage'].includes(code)) return t('err.' + code);
    if (status === 429) return t('err.rate_limited');
    if (status === 413) return t('err.body_too_large');
    if (status >= 500) return t('err.server');
    return t('err.badAnswer');
  }

  // ---- door screen ------------------------------------------------------------

  function openDoor() {
    const w = sweep();
    const s = nowSec();
    const door = $('door');
    $('app').inert = true;
    door.hidden = false;
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
    // Use the copy that expires first; mark it used and forget its text
    // before it reaches the screen, so no copy is ever shown twice.
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
    renderStatus();
  }

  // A message screen has no colour banner: without a QR there is nothing a
  // venue could check, so it must not look like a code.
  let doorLines = null;
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
    const banner = $('door-banner');
    banner.className = 'banner ' + (colour || 'none');
    $('door-symbol').textContent = colour ? SYMBOLS[colour] : '';
    $('door-word').textContent = colour ? colourWord(colour) : t('title');
  }

  function updateDoor() {
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
    $('door-left').textContent = t('door.left', { left: duration(left) });
    $('door-until').textContent = t('door.until', { until });
    $('door-qr').setAttribute('aria-label', t('door.label', { colour: colourWord(shown.colour), until, left: duration(left) }));
  }

  function closeDoor() {
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
    renderStatus();
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

  // ---- start ------------------------------------------------------------------

  function tick() {
    renderStatus();
    if (shown) updateDoor();
  }

  function start() {
    // Open at the top, where the status and the door button are.
    if ('scrollRestoration' in history) history.scrollRestoration = 'manual';
    applyText();
    renderStatus();
    renderPending();
    $('lang').addEventListener('click', () => {
      lang = lang === 'zh' ? 'en' : 'zh';
      try { localStorage.setItem(LANG_KEY, lang); } catch (e) { /* session-only choice */ }
      applyText();
      renderStatus();
      renderPending();
      if (shown) { setBanner(shown.colour); updateDoor(); }
      else if (doorLines) doorMessage(doorLines);
    });
    $('show').addEventListener('click', openDoor);
    $('door-close').addEventListener('click', closeDoor);
    document.addEventListener('keydown', (e) => { if (e.key === 'Escape' && !$('door').hidden) closeDoor(); });
    $('paste-add').addEventListener('click', () => { if (addAttestation($('paste').value)) $('paste').value = ''; });
    $('redeem').addEventListener('click', redeem);
    $('file').addEventListener('change', onFile);
    $('scan').addEventListener('click', startCamera);
    $('scan-stop').addEventListener('click', stopCamera);
    setInterval(tick, TICK_MS);
    // Timers stop while a phone sleeps; sweep again when the page comes back.
    window.addEventListener('focus', tick);
    window.addEventListener('pageshow', tick);
    document.addEventListener('visibilitychange', () => { if (!document.hidden) tick(); });
    if ('serviceWorker' in navigator) navigator.serviceWorker.register('sw.js').catch(() => {});
    document.body.dataset.ready = '1';
  }

  start();
})();

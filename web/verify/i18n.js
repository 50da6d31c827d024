// Strings for the verifier app: English and Simplified Chinese. Keys are
// shared; the page picks a language from navigator.language and the switch
// keeps the choice in the URL (?lang=), never in storage.
'use strict';

const STRINGS = {
  en: {
    title: 'Health code check',
    switchTo: '中文',
    pointCamera: 'Point the camera at the code',
    pickImage: 'Choose a photo of the code',
    pasteLabel: 'Or paste the code text',
    check: 'Check',
    retryCamera: 'Try the camera again',
    cameraDenied: 'Camera permission was denied. Allow the camera for this page in the browser settings, or choose a photo of the code or paste its text.',
    cameraNone: 'No camera found. Choose a photo of the code or paste its text.',
    cameraError: 'The camera could not be started. Choose a photo of the code or paste its text.',
    cameraStarting: 'Starting the camera…',
    engineLoading: 'Loading…',
    engineFailed: 'The checker could not be loaded. Reload the page while online.',
    bundleLoading: 'Loading the trust list…',
    bundleAge: 'Trust list updated {age}.',
    bundleOffline: 'Offline: using the saved trust list.',
    bundleStale: '! The trust list is old. Connect to the network to update it.',
    bundleExpired: '✕ The trust list has expired. Codes cannot be checked until it is updated.',
    bundleNone: '✕ No trust list. Open this page once while online.',
    bundleInvalid: '✕ The trust list is not signed by the trusted key.',
    green: 'GREEN', yellow: 'YELLOW', red: 'RED',
    invalid: 'NOT VALID', refused: 'CANNOT CHECK',
    validUntil: 'Valid until {time}',
    hint: 'Holder: {hint}',
    staleOnResult: '! Trust list is old: update soon',
    reason_bad_signature: 'The signature does not match: this code was altered or forged.',
    reason_expired: 'This code has expired. Ask for a current code.',
    reason_not_yet_valid: 'This code is not valid yet. Check the clock on both devices.',
    reason_unknown_key: 'Signed by a key this trust list does not know. Update the trust list; until then treat as not valid.',
    reason_key_window: 'The code is outside its signing key\u2019s validity.',
    reason_malformed: 'This is not a health code.',
    reason_algorithm_not_allowed: 'This code uses a signature method that is not allowed.',
    reason_invalid: 'This code is not valid.',
    reason_bundle_expired: 'The trust list has expired: connect to update it before checking.',
    reason_no_bundle: 'No trust list: open this page once while online.',
    reason_bundle_invalid: 'The trust list is not signed by the trusted key.',
    noCodeInImage: 'No code found in that image.',
    countsToday: 'Today: ✓ {green}  ! {yellow}  ✕ {red}  · not valid {invalid}',
    countingSwitch: 'Count visitors per colour today (on this device only)',
  },
  zh: {
    title: '健康码核验',
    switchTo: 'English',
    pointCamera: '请将摄像头对准二维码',
    pickImage: '选择二维码照片',
    pasteLabel: '或粘贴二维码文字',
    check: '核验',
    retryCamera: '重试摄像头',
    cameraDenied: '摄像头权限被拒绝。请在浏览器设置中允许本页面使用摄像头，或选择二维码照片、粘贴二维码文字。',
    cameraNone: '未找到摄像头。请选择二维码照片或粘贴二维码文字。',
    cameraError: '无法启动摄像头。请选择二维码照片或粘贴二维码文字。',
    cameraStarting: '正在启动摄像头…',
    engineLoading: '正在加载…',
    engineFailed: '核验程序加载失败。请联网后重新加载本页。',
    bundleLoading: '正在加载信任列表…',
    bundleAge: '信任列表更新于{age}。',
    bundleOffline: '离线：使用已保存的信任列表。',
    bundleStale: '! 信任列表已过旧，请联网更新。',
    bundleExpired: '✕ 信任列表已过期，更新前无法核验。',
    bundleNone: '✕ 没有信任列表。请联网打开本页一次。',
    bundleInvalid: '✕ 信任列表不是由受信任的密钥签名的。',
    green: '绿码', yellow: '黄码', red: '红码',
    invalid: '无效', refused: '无法核验',
    validUntil: '有效期至 {time}',
    hint: '持有人：{hint}',
    staleOnResult: '! 信任列表已过旧，请尽快更新',
    reason_bad_signature: '签名不符：此码已被篡改或伪造。',
    reason_expired: '此码已过期，请出示当前的码。',
    reason_not_yet_valid: '此码尚未生效，请检查两台设备的时间。',
    reason_unknown_key: '签名密钥不在信任列表中。请更新信任列表；在此之前视为无效。',
    reason_key_window: '此码超出其签名密钥的有效期。',
    reason_malformed: '这不是健康码。',
    reason_algorithm_not_allowed: '此码使用了不允许的签名方式。',
    reason_invalid: '此码无效。',
    reason_bundle_expired: '信任列表已过期：请联网更新后再核验。',
    reason_no_bundle: '没有信任列表：请联网打开本页一次。',
    reason_bundle_invalid: '信任列表不是由受信任的密钥签名的。',
    noCodeInImage: '图片中未找到二维码。',
    countsToday: '今日：✓ {green}  ! {yellow}  ✕ {red}  · 无效 {invalid}',
    countingSwitch: '在本设备统计今日各颜色人数',
  },
};

// pickLanguage returns "en" or "zh": the URL's choice, else the browser's.
function pickLanguage(search, navLanguages) {
  const q = new URLSearchParams(search).get('lang');
  if (q === 'en' || q === 'zh') return q;
  for (const l of navLanguages || []) {
    const low = String(l).toLowerCase();
    if (low.startsWith('zh')) return 'zh';
    if (low.startsWith('en')) return 'en';
  }
  return 'en';
}

// tr formats a string with {name} placeholders.
function tr(lang, key, vars) {
  const s = (STRINGS[lang] && STRINGS[lang][key]) || STRINGS.en[key] || key;
  return s.replace(/\{(\w+)\}/g, (_, k) => (vars && k in vars ? String(vars[k]) : ''));
}

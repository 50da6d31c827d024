// One way of holding translations for both apps: a table of strings per
// language ("en", "zh"), {name} placeholders, plural pairs for durations,
// and dates and times in the reader's own locale with a 24-hour clock
// (the locale's order of day, month and year; never an AM/PM that leaves
// midnight and noon to guesswork).

export const LANGS = ['en', 'zh'];

// pickLanguage returns "en" or "zh": the explicit choice if it is one,
// else the first of the browser's languages that is.
export function pickLanguage(choice, navLanguages) {
  if (LANGS.includes(choice)) return choice;
  for (const l of navLanguages || []) {
    const low = String(l).toLowerCase();
    if (low.startsWith('zh')) return 'zh';
    if (low.startsWith('en')) return 'en';
  }
  return 'en';
}

export function fill(s, params) {
  return params ? s.replace(/\{(\w+)\}/g, (m, k) => (k in params ? String(params[k]) : m)) : s;
}

// Texts is a translator over tables {en: {...}, zh: {...}}. Missing keys
// fall back to English, then to the key itself (so a gap is visible).
export class Texts {
  constructor(tables, lang, navLanguages) {
    this.tables = tables;
    this.nav = navLanguages || [];
    this.lang = pickLanguage(lang, this.nav);
  }

  has(key) { return this.tables.en[key] !== undefined; }

  raw(key) {
    const own = this.tables[this.lang] && this.tables[this.lang][key];
    return own !== undefined ? own : this.tables.en[key];
  }

  t(key, params) {
    const s = this.raw(key);
    if (s === undefined) return key;
    return fill(s, params);
  }

  // The locale dates are written in: the browser's own variant of the
  // page's language (en-US, en-GB, en-IN, zh-TW…) when it has one, else
  // en-GB or zh-CN.
  locale() {
    for (const l of this.nav) {
      const low = String(l).toLowerCase();
      if (low.startsWith(this.lang === 'zh' ? 'zh' : 'en')) return String(l);
    }
    return this.lang === 'zh' ? 'zh-CN' : 'en-GB';
  }

  htmlLang() { return this.lang === 'zh' ? 'zh-Hans' : 'en'; }

  // when formats Unix milliseconds: "18:00" today, else the date too
  // (the year only when it is not this year). nowMs is the page's clock.
  when(ms, nowMs) {
    const d = new Date(ms);
    const today = new Date(nowMs);
    const opts = { hour: '2-digit', minute: '2-digit', hourCycle: 'h23' };
    if (d.toDateString() !== today.toDateString()) {
      opts.day = 'numeric';
      opts.month = 'short';
      if (d.getFullYear() !== today.getFullYear()) opts.year = 'numeric';
    }
    return new Intl.DateTimeFormat(this.locale(), opts).format(d);
  }

  // ago says how long before nowMs the time ms was, in words.
  ago(ms, nowMs) {
    const rtf = new Intl.RelativeTimeFormat(this.lang === 'zh' ? 'zh-Hans' : 'en', { numeric: 'auto' });
    const s = Math.max(0, Math.round((nowMs - ms) / 1000));
    if (s < 60) return rtf.format(-s, 'second');
    if (s < 3600) return rtf.format(-Math.round(s / 60), 'minute');
    if (s < 86400) return rtf.format(-Math.round(s / 3600), 'hour');
    return rtf.format(-Math.round(s / 86400), 'day');
  }

  // duration spells a number of seconds: "2 days 3 hours", "less than a
  // minute". The tables hold dur.days/hours/minutes as [one, many].
  duration(seconds) {
    if (seconds < 60) return this.t('dur.lessMinute');
    const d = Math.floor(seconds / 86400);
    const h = Math.floor((seconds % 86400) / 3600);
    const m = Math.floor((seconds % 3600) / 60);
    const part = (key, n) => fill(this.raw(key)[n === 1 ? 0 : 1], { n });
    const parts = [];
    if (d > 0) { parts.push(part('dur.days', d)); if (h > 0) parts.push(part('dur.hours', h)); }
    else if (h > 0) { parts.push(part('dur.hours', h)); if (m > 0) parts.push(part('dur.minutes', m)); }
    else parts.push(part('dur.minutes', m));
    return parts.join(this.t('dur.join'));
  }

  // apply fills every [data-i18n] element of doc with its text.
  apply(doc) {
    doc.documentElement.lang = this.htmlLang();
    for (const el of doc.querySelectorAll('[data-i18n]')) el.textContent = this.t(el.dataset.i18n);
  }
}

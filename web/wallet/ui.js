// What every wallet screen shares: the translator, the message line, and
// small element builders. Everything printed from an attestation or a
// token goes through textContent, never innerHTML.
import { Texts } from './common/i18n.js';
import { now } from './common/clock.js';
import { TEXT } from './texts.js';

export const LANG_KEY = 'healthcode.lang';
export const SYMBOLS = { green: '✓', yellow: '!', red: '✕' };

function savedLanguage() {
  try { return localStorage.getItem(LANG_KEY); } catch (e) { return null; }
}

export const tx = new Texts(TEXT, savedLanguage(),
  navigator.languages && navigator.languages.length ? navigator.languages : [navigator.language || 'en']);
export const t = (key, params) => tx.t(key, params);

export function switchLanguage() {
  tx.lang = tx.lang === 'zh' ? 'en' : 'zh';
  try { localStorage.setItem(LANG_KEY, tx.lang); } catch (e) { /* session-only choice */ }
}

// when formats Unix seconds in the reader's locale, 24-hour.
export const when = (sec) => tx.when(sec * 1000, now());
export const colourWord = (c) => t('colour.' + c);
export const $ = (id) => document.getElementById(id);

export function para(text) {
  const p = document.createElement('p');
  p.textContent = text;
  return p;
}

// Messages go to one live region. A repeated message gets a zero-width
// space toggled on so that screen readers announce it again; data-seq
// counts messages, so a test can wait for the next one.
export function say(text, isError) {
  const live = $('live');
  live.classList.toggle('error', !!isError);
  live.textContent = live.textContent === text ? text + '\u200b' : text;
  live.dataset.seq = String(Number(live.dataset.seq || 0) + 1);
  live.scrollIntoView({ block: 'nearest' });
}

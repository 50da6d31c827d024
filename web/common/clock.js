// The apps' one clock. Every reading of the time goes through now(), so a
// test (or a person checking a page) can move it: set window.__healthcodeNow
// to Unix milliseconds, or to a function returning them, before load
// (CDP Page.addScriptToEvaluateOnNewDocument) or at any time after.
export function now() {
  const o = window.__healthcodeNow;
  if (typeof o === 'function') return Number(o());
  if (typeof o === 'number') return o;
  return Date.now();
}

export const nowSec = () => Math.floor(now() / 1000);

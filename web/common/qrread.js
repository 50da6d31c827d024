// Reading a QR code from a camera frame or a photo, for both apps. A code
// that fills little of the frame has too few pixels per module for the
// decoder; so besides the whole frame, the reader tries the frame's centre,
// cropped and scaled up (smoothly), where a person holding up a phone puts
// the code. decode(imageData) is the app's decoder (the verifier's Go
// module, the wallet's jsQR): it returns the text or a falsy value.

// Region of the source to read: the whole of it, or its centre.
export function whole(sw, sh) { return { x: 0, y: 0, w: sw, h: sh, whole: true }; }
export function centre(sw, sh, frac) {
  const w = Math.round(sw * frac);
  const h = Math.round(sh * frac);
  return { x: Math.round((sw - w) / 2), y: Math.round((sh - h) / 2), w, h };
}

// The regions a live scan cycles through, one per frame, so each frame
// costs one decode; and the ones a photo gets, all at once.
export function scanRegions(sw, sh) { return [whole(sw, sh), centre(sw, sh, 0.5)]; }
export function photoRegions(sw, sh) { return [whole(sw, sh), centre(sw, sh, 0.5), centre(sw, sh, 0.3)]; }

export class FrameReader {
  constructor(canvas, decode, maxSide) {
    this.canvas = canvas;
    this.decode = decode;
    this.maxSide = maxSide;
  }

  // pixels draws region of source at most maxSide on its longer side,
  // scaling a small region up, and returns its ImageData.
  pixels(source, region) {
    const scale = this.maxSide / Math.max(region.w, region.h);
    // The whole frame is only ever scaled down; a crop up to 4 times.
    const s = Math.min(scale, region.whole ? 1 : 4);
    const w = Math.max(1, Math.round(region.w * s));
    const h = Math.max(1, Math.round(region.h * s));
    const c = this.canvas;
    if (c.width !== w || c.height !== h) { c.width = w; c.height = h; }
    const ctx = c.getContext('2d', { willReadFrequently: true });
    ctx.imageSmoothingEnabled = true;
    ctx.imageSmoothingQuality = 'high';
    ctx.drawImage(source, region.x, region.y, region.w, region.h, 0, 0, w, h);
    return ctx.getImageData(0, 0, w, h);
  }

  read(source, region) {
    return this.decode(this.pixels(source, region)) || '';
  }

  // readAny tries regions in order and returns the first text found.
  readAny(source, regions) {
    for (const r of regions) {
      const text = this.read(source, r);
      if (text) return text;
    }
    return '';
  }
}

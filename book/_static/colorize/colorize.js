// colorize.js: colorlab.colorize in the reader's browser, the same algorithm as the Python library.
//
// A photo is colorized as colorlab/colorize.py does it: the colour (ab) is predicted on a small
// copy at the model's size (resized as PIL's bilinear filter does), upsampled linearly to the
// photo's own size (F.interpolate, align_corners=False) and combined with the photo's own
// full-resolution lightness L. sRGB <-> Lab uses the constants of colorlab/color.py (D65 white,
// scikit-image's matrix). Nothing here touches the page or the network: the Web Worker
// (worker.js) calls it with pixels and a function that runs the model, and node's test runner
// checks the colour conversion against colorlab.color (tests/js/color.test.mjs).

export const L_SCALE = 50; // L in [0, 100] -> L / 50 - 1 in [-1, 1]
export const AB_SCALE = 110; // ab / 110 in about [-1, 1]

const XYZ_FROM_RGB = [
  [0.412453, 0.35758, 0.180423],
  [0.212671, 0.71516, 0.072169],
  [0.019334, 0.119193, 0.950227],
];
const RGB_FROM_XYZ = invert3(XYZ_FROM_RGB);
const WHITE = [0.95047, 1.0, 1.08883];
const EPS = 0.008856; // (6/29)^3: where the Lab cube root turns linear
const KAPPA = 7.787; // slope of the linear part

function invert3(m) {
  const [[a, b, c], [d, e, f], [g, h, i]] = m;
  const det = a * (e * i - f * h) - b * (d * i - f * g) + c * (d * h - e * g);
  return [
    [(e * i - f * h) / det, (c * h - b * i) / det, (b * f - c * e) / det],
    [(f * g - d * i) / det, (a * i - c * g) / det, (c * d - a * f) / det],
    [(d * h - e * g) / det, (b * g - a * h) / det, (a * e - b * d) / det],
  ];
}

/** sRGB in [0, 1] -> [L, a, b] (L in [0, 100]), as colorlab.color.rgb_to_lab. */
export function rgbToLab(r, g, b) {
  const lin = [r, g, b].map((v) => {
    const x = Math.min(Math.max(v, 0), 1);
    return x > 0.04045 ? ((x + 0.055) / 1.055) ** 2.4 : x / 12.92;
  });
  const f = XYZ_FROM_RGB.map((row, k) => {
    const t = (row[0] * lin[0] + row[1] * lin[1] + row[2] * lin[2]) / WHITE[k];
    return t > EPS ? Math.cbrt(t) : KAPPA * t + 16 / 116;
  });
  return [116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])];
}

// The linearised sRGB of each 8-bit value, and Lab's f(Y): L of a pixel needs only its luminance Y.
const LINEAR8 = Float64Array.from({ length: 256 }, (_, v) => {
  const x = v / 255;
  return x > 0.04045 ? ((x + 0.055) / 1.055) ** 2.4 : x / 12.92;
});

/** L (0..100) of an 8-bit sRGB pixel: rgbToLab(r / 255, g / 255, b / 255)[0], without a and b. */
export function lightness8(r, g, b) {
  const [yr, yg, yb] = XYZ_FROM_RGB[1];
  const t = (yr * LINEAR8[r] + yg * LINEAR8[g] + yb * LINEAR8[b]) / WHITE[1];
  return 116 * (t > EPS ? Math.cbrt(t) : KAPPA * t + 16 / 116) - 16;
}

/** [L, a, b] -> sRGB in [0, 1] (out-of-gamut colours clipped), as colorlab.color.lab_to_rgb. */
export function labToRgb(L, a, b) {
  const out = new Float64Array(3);
  labToRgbInto(L, a, b, out, 0, 1);
  return Array.from(out);
}

function unfold(f) {
  const cube = f * f * f;
  return cube > EPS ? cube : (f - 16 / 116) / KAPPA;
}

function gamma(linear) {
  const lin = linear > 0 ? linear : 0;
  const v = lin > 0.0031308 ? 1.055 * lin ** (1 / 2.4) - 0.055 : 12.92 * lin;
  return v < 0 ? 0 : v > 1 ? 1 : v;
}

const [R0, R1, R2] = RGB_FROM_XYZ;

/** labToRgb written into out[at..at+2], each channel times `scale` (255 and rounded for pixels, 1 for values). */
function labToRgbInto(L, a, b, out, at, scale) {
  const fy = (L + 16) / 116;
  const fz = fy - b / 200;
  const x = unfold(fy + a / 500) * WHITE[0];
  const y = unfold(fy) * WHITE[1];
  const z = unfold(fz > 0 ? fz : 0) * WHITE[2];
  const r = gamma(R0[0] * x + R0[1] * y + R0[2] * z);
  const g = gamma(R1[0] * x + R1[1] * y + R1[2] * z);
  const bl = gamma(R2[0] * x + R2[1] * y + R2[2] * z);
  if (scale === 1) {
    out[at] = r; out[at + 1] = g; out[at + 2] = bl;
  } else {
    out[at] = Math.round(r * scale); out[at + 1] = Math.round(g * scale); out[at + 2] = Math.round(bl * scale);
  }
}

// PIL's resampling (Image.resize with BILINEAR): a triangle filter stretched by the reduction
// factor (antialiased), fixed-point coefficients, a horizontal then a vertical pass, each rounded
// to 8 bits. Reproduced exactly so the network sees the small copy Python gives it.
const PRECISION_BITS = 32 - 8 - 2;

function pilCoefficients(inSize, outSize) {
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = 1 * filterscale; // the bilinear filter's support is 1
  const taps = [];
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const xmin = Math.max(Math.trunc(center - support + 0.5), 0);
    const xmax = Math.min(Math.trunc(center + support + 0.5), inSize) - xmin;
    const weights = [];
    let total = 0;
    for (let x = 0; x < xmax; x++) {
      const w = Math.max(1 - Math.abs((x + xmin - center + 0.5) / filterscale), 0);
      weights.push(w);
      total += w;
    }
    const fixed = weights.map((w) => {
      const k = total ? w / total : 0;
      return Math.trunc(k < 0 ? -0.5 + k * (1 << PRECISION_BITS) : 0.5 + k * (1 << PRECISION_BITS));
    });
    taps.push({ start: xmin, fixed });
  }
  return taps;
}

function clip8(sum) {
  const v = Math.floor(sum / 2 ** PRECISION_BITS);
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/** RGBA pixels (width x height) -> RGB Uint8Array (outW x outH), as PIL's resize(BILINEAR). */
export function resizeBilinearPIL(rgba, width, height, outW, outH) {
  const horizontal = pilCoefficients(width, outW);
  const vertical = pilCoefficients(height, outH);
  const rows = new Uint8Array(height * outW * 3);
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < outW; x++) {
      const { start, fixed } = horizontal[x];
      for (let c = 0; c < 3; c++) {
        let sum = 1 << (PRECISION_BITS - 1);
        for (let k = 0; k < fixed.length; k++) sum += rgba[(y * width + start + k) * 4 + c] * fixed[k];
        rows[(y * outW + x) * 3 + c] = clip8(sum);
      }
    }
  }
  const out = new Uint8Array(outH * outW * 3);
  for (let y = 0; y < outH; y++) {
    const { start, fixed } = vertical[y];
    for (let x = 0; x < outW; x++) {
      for (let c = 0; c < 3; c++) {
        let sum = 1 << (PRECISION_BITS - 1);
        for (let k = 0; k < fixed.length; k++) sum += rows[((start + k) * outW + x) * 3 + c] * fixed[k];
        out[(y * outW + x) * 3 + c] = clip8(sum);
      }
    }
  }
  return out;
}

/** Source indices and weights of `nOut` samples resized linearly from `nIn` (align_corners=False). */
export function linearWeights(nIn, nOut) {
  const low = new Int32Array(nOut);
  const high = new Int32Array(nOut);
  const frac = new Float32Array(nOut);
  for (let i = 0; i < nOut; i++) {
    const position = Math.max((i + 0.5) * (nIn / nOut) - 0.5, 0);
    low[i] = Math.min(Math.floor(position), nIn - 1);
    high[i] = Math.min(low[i] + 1, nIn - 1);
    frac[i] = position - low[i];
  }
  return { low, high, frac };
}

/** The network's input: L / 50 - 1 of the small RGB copy, a Float32Array of size * size. */
export function smallLightness(rgbSmall, size) {
  const input = new Float32Array(size * size);
  for (let i = 0; i < size * size; i++) {
    input[i] = lightness8(rgbSmall[3 * i], rgbSmall[3 * i + 1], rgbSmall[3 * i + 2]) / L_SCALE - 1;
  }
  return input;
}

/**
 * Colorize RGBA `pixels` (width x height) with `predict`, an async function from the model's input
 * (Float32Array, 1 x 1 x size x size, L in [-1, 1]) to its output (Float32Array, 1 x 2 x size x size).
 * Returns RGBA pixels of the same size. `onProgress(fraction)` is called while the rows are done.
 */
export async function colorize(pixels, width, height, size, predict, onProgress = () => {}) {
  const small = resizeBilinearPIL(pixels, width, height, size, size);
  const abSmall = await predict(smallLightness(small, size));
  const plane = size * size;
  const ab = new Float32Array(2 * plane);
  for (let i = 0; i < 2 * plane; i++) ab[i] = Math.min(Math.max(abSmall[i], -1), 1) * AB_SCALE;
  const rows = linearWeights(size, height);
  const cols = linearWeights(size, width);
  const out = new Uint8ClampedArray(width * height * 4);
  const rowAb = new Float32Array(2 * size);
  for (let y = 0; y < height; y++) {
    const lo = rows.low[y] * size;
    const hi = rows.high[y] * size;
    const f = rows.frac[y];
    for (let c = 0; c < 2; c++) {
      for (let x = 0; x < size; x++) {
        rowAb[c * size + x] = ab[c * plane + lo + x] * (1 - f) + ab[c * plane + hi + x] * f;
      }
    }
    for (let x = 0; x < width; x++) {
      const p = (y * width + x) * 4;
      const L = lightness8(pixels[p], pixels[p + 1], pixels[p + 2]);
      const g = cols.frac[x];
      const a = rowAb[cols.low[x]] * (1 - g) + rowAb[cols.high[x]] * g;
      const b = rowAb[size + cols.low[x]] * (1 - g) + rowAb[size + cols.high[x]] * g;
      labToRgbInto(L, a, b, out, p, 255);
      out[p + 3] = 255;
    }
    if (y % 256 === 255) onProgress(y / height);
  }
  onProgress(1);
  return out;
}

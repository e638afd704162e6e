// The book's in-browser colorizer against the Python library, on cases that tests/test_widget_js.py
// computes with colorlab (random colours through colorlab.color; a random photo through PIL's resize
// and colorlab.colorize.colorize_image with a generator that returns known ab).
// Run by pytest (which writes the cases and sets COLORLAB_JS_CASES), or: npm test after that.
import { test } from "node:test";
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { rgbToLab, labToRgb, resizeBilinearPIL, colorize } from "../../book/_static/colorize/colorize.js";

const path = process.env.COLORLAB_JS_CASES;
if (!path) throw new Error("COLORLAB_JS_CASES is not set: run `python -m pytest tests/test_widget_js.py`, which writes the cases");
const cases = JSON.parse(readFileSync(path, "utf8"));

// colorlab.color computes in float32 (relative error about 1e-7 of values up to 100): 1e-3 Lab units is
// ten times below anything visible and far above float32 rounding.
test("sRGB -> Lab agrees with colorlab.color.rgb_to_lab", () => {
  cases.rgb.forEach((rgb, i) => {
    const lab = rgbToLab(...rgb);
    for (let k = 0; k < 3; k++) assert.ok(Math.abs(lab[k] - cases.lab[i][k]) < 1e-3, `colour ${i}: ${lab} vs ${cases.lab[i]}`);
  });
});

test("Lab -> sRGB agrees with colorlab.color.lab_to_rgb, out-of-gamut colours included", () => {
  cases.lab_in.forEach((lab, i) => {
    const rgb = labToRgb(...lab);
    for (let k = 0; k < 3; k++) assert.ok(Math.abs(rgb[k] - cases.rgb_out[i][k]) < 1e-5, `Lab ${lab}: ${rgb} vs ${cases.rgb_out[i]}`);
  });
});

test("the small copy is PIL's bilinear resize, exactly", () => {
  const { width, height, size, rgba, pil_small } = cases.photo;
  const small = resizeBilinearPIL(Uint8Array.from(rgba), width, height, size, size);
  assert.deepEqual(Array.from(small), pil_small);
});

test("colorize applies the predicted ab to the full-size L as colorlab.colorize does", async () => {
  const { width, height, size, rgba, ab_small, colorized, L_small } = cases.photo;
  let seen;
  const predict = async (input) => { seen = input; return Float32Array.from(ab_small); };
  const out = await colorize(Uint8Array.from(rgba), width, height, size, predict);
  seen.forEach((v, i) => assert.ok(Math.abs(v - L_small[i]) < 1e-4, `network input ${i}: ${v} vs ${L_small[i]}`));
  let worst = 0;
  for (let i = 0; i < width * height; i++) {
    for (let c = 0; c < 3; c++) worst = Math.max(worst, Math.abs(out[4 * i + c] - colorized[3 * i + c]));
  }
  // One level of 255: float32 (torch) against float64 (JS) can round a channel the other way.
  assert.ok(worst <= 1, `largest difference ${worst} levels of 255`);
});

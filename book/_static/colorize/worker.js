// worker.js: the model and the colorizer off the page's main thread (a module Web Worker).
//
// Messages in: {type: "load", modelUrl, bytes} once, then {type: "colorize", id, bitmap} per photo.
// Messages out: {type: "progress", loaded, total}, {type: "ready", seconds}, {type: "result", id, pixels,
// width, height, seconds}, {type: "error", message} (one line for the page to show).
import { colorize } from "./colorize.js";

let ort = null;
let session = null;
let size = 0;

async function load({ modelUrl, bytes, modelSize }) {
  const start = performance.now();
  try {
    ort = await import("./ort/ort.wasm.min.mjs");
  } catch (err) {
    throw new Error("onnxruntime-web is missing from this build (run `make book`, which copies it from npm)");
  }
  ort.env.wasm.wasmPaths = new URL("./ort/", import.meta.url).href;
  // Threads need cross-origin isolation, which a static site (GitHub Pages) does not have: one thread then.
  ort.env.wasm.numThreads = self.crossOriginIsolated ? Math.min(4, navigator.hardwareConcurrency || 1) : 1;
  const response = await fetch(modelUrl);
  if (!response.ok) throw new Error(`the model ${modelUrl} could not be downloaded (HTTP ${response.status})`);
  const total = Number(response.headers.get("Content-Length")) || bytes;
  const reader = response.body.getReader();
  const model = new Uint8Array(total);
  let loaded = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    model.set(value, loaded);
    loaded += value.length;
    postMessage({ type: "progress", loaded, total });
  }
  session = await ort.InferenceSession.create(model.subarray(0, loaded), { executionProviders: ["wasm"] });
  size = modelSize;
  postMessage({ type: "ready", seconds: (performance.now() - start) / 1000 });
}

async function predict(input) {
  const feeds = { L: new ort.Tensor("float32", input, [1, 1, size, size]) };
  const output = await session.run(feeds);
  return output.ab.data;
}

async function colorizeBitmap({ id, bitmap }) {
  const start = performance.now();
  const { width, height } = bitmap;
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(bitmap, 0, 0);
  bitmap.close();
  const pixels = context.getImageData(0, 0, width, height).data;
  const out = await colorize(pixels, width, height, size, predict,
    (fraction) => postMessage({ type: "working", id, fraction }));
  postMessage({ type: "result", id, pixels: out, width, height, seconds: (performance.now() - start) / 1000 },
    [out.buffer]);
}

onmessage = async ({ data }) => {
  try {
    if (data.type === "load") await load(data);
    else if (data.type === "colorize") await colorizeBitmap(data);
  } catch (err) {
    postMessage({ type: "error", id: data.id, message: String(err.message || err) });
  }
};

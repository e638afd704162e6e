// widget.js: "colorize your own photo" on the book's pages. Every <div class="colorlab-widget"> becomes
// a widget; the photo is read, colorized and offered for download inside the page (worker.js), and
// never sent anywhere. The model (model/model.json + its .onnx, exported by `make book`) is downloaded
// once, on the first photo, with a progress bar.
const BASE = new URL(".", import.meta.url);
const MAX_PIXELS = 40_000_000; // as colorlab.colorize.MAX_PIXELS: larger photos are colorized downscaled

function element(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) node.setAttribute(key, value);
  node.append(...children);
  return node;
}

async function fetchJson(path) {
  const response = await fetch(new URL(path, BASE));
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status}`);
  return response.json();
}

class Widget {
  constructor(root, manifest, oldPhotos) {
    this.root = root;
    this.manifest = manifest;
    this.worker = null;
    this.ready = null;
    this.next = 0;
    this.build(oldPhotos);
  }

  build(oldPhotos) {
    const m = this.manifest;
    this.file = element("input", { type: "file", accept: "image/*", class: "clw-file" });
    this.picker = element("select", { class: "clw-old", "aria-label": "an old photo" },
      element("option", { value: "" }, "…or pick an old photo"),
      ...oldPhotos.map((p) => element("option", { value: p.file }, p.label)));
    this.status = element("span", { class: "clw-status", role: "status" }, "Choose or drop a photo.");
    this.progress = element("progress", { class: "clw-progress", max: "1", value: "0", hidden: "" });
    this.before = element("canvas", { class: "clw-before" });
    this.after = element("canvas", { class: "clw-after" });
    this.download = element("a", { class: "clw-download", hidden: "" }, "Download the colorized photo");
    const label = element("label", { class: "clw-choose" }, "Choose a photo", this.file);
    this.panes = element("div", { class: "clw-panes" },
      element("figure", {}, this.before, element("figcaption", {}, "Your photo (drop one here)")),
      element("figure", {}, this.after, element("figcaption", {}, `Colorized by ${m.name}`)));
    this.root.replaceChildren(
      element("div", { class: "clw-controls" }, label, oldPhotos.length ? this.picker : "", this.status),
      this.progress, this.panes,
      element("div", { class: "clw-info" },
        element("span", { class: "clw-model" }, `Model: ${m.name} (${m.variant}, ${(m.bytes / 1e6).toFixed(0)} MB, `
          + `predicts colour at ${m.size}×${m.size} px)`), " ", this.download),
      element("p", { class: "clw-note" }, "Everything runs in this page, in your browser: no photo leaves your machine."));
    this.root.dataset.state = "idle";
    this.file.addEventListener("change", () => this.file.files[0] && this.run(this.file.files[0], this.file.files[0].name));
    this.picker.addEventListener("change", async () => {
      if (!this.picker.value) return;
      const response = await fetch(new URL(`old-photos/${this.picker.value}`, BASE));
      this.run(await response.blob(), this.picker.value);
    });
    this.panes.addEventListener("dragover", (event) => { event.preventDefault(); this.panes.classList.add("clw-over"); });
    this.panes.addEventListener("dragleave", () => this.panes.classList.remove("clw-over"));
    this.panes.addEventListener("drop", (event) => {
      event.preventDefault();
      this.panes.classList.remove("clw-over");
      const file = event.dataTransfer.files[0];
      if (file) this.run(file, file.name);
    });
  }

  say(text, state) {
    this.status.textContent = text;
    if (state) this.root.dataset.state = state;
  }

  loadModel() {
    if (this.ready) return this.ready;
    this.worker = new Worker(new URL("worker.js", BASE), { type: "module" });
    this.ready = new Promise((resolve, reject) => {
      this.worker.addEventListener("message", ({ data }) => {
        if (data.type === "progress") {
          this.progress.hidden = false;
          this.progress.value = data.loaded / data.total;
          this.say(`Downloading the model: ${(data.loaded / 1e6).toFixed(1)} of ${(data.total / 1e6).toFixed(1)} MB`, "loading");
        } else if (data.type === "ready") {
          this.progress.hidden = true;
          resolve(data.seconds);
        } else if (data.type === "error" && data.id === undefined) {
          reject(new Error(data.message));
        }
      });
      this.worker.addEventListener("error", () => reject(new Error("the colorizer could not start in this browser")));
    });
    this.worker.postMessage({ type: "load", modelUrl: new URL(`model/${this.manifest.file}`, BASE).href,
      bytes: this.manifest.bytes, modelSize: this.manifest.size });
    return this.ready;
  }

  async run(blob, name) {
    const start = performance.now();
    const id = ++this.next;
    this.download.hidden = true;
    try {
      // Pixels as stored in the file (no colour-profile conversion), as Python's PIL reads them.
      const options = { colorSpaceConversion: "none", premultiplyAlpha: "none", imageOrientation: "from-image" };
      let bitmap = await createImageBitmap(blob, options);
      let note = "";
      if (bitmap.width * bitmap.height > MAX_PIXELS) { // a page has less memory than a command line
        const scale = Math.sqrt(MAX_PIXELS / (bitmap.width * bitmap.height));
        note = ` (downscaled from ${bitmap.width}×${bitmap.height}: more than ${MAX_PIXELS / 1e6} MP)`;
        const [resizeWidth, resizeHeight] = [Math.floor(bitmap.width * scale), Math.floor(bitmap.height * scale)];
        bitmap.close();
        bitmap = await createImageBitmap(blob, { ...options, resizeWidth, resizeHeight, resizeQuality: "high" });
      }
      this.before.width = bitmap.width;
      this.before.height = bitmap.height;
      this.before.getContext("2d").drawImage(bitmap, 0, 0);
      this.say("Loading the model…", "loading");
      await this.loadModel();
      this.say(`Colorizing ${bitmap.width}×${bitmap.height} px…`, "working");
      const result = await this.colorize(id, bitmap);
      if (id !== this.next) return; // a newer photo was chosen meanwhile
      this.after.width = result.width;
      this.after.height = result.height;
      this.after.getContext("2d").putImageData(new ImageData(result.pixels, result.width, result.height), 0, 0);
      const seconds = (performance.now() - start) / 1000;
      this.root.dataset.seconds = seconds.toFixed(3);
      this.say(`Colorized in ${seconds.toFixed(1)} s (${result.seconds.toFixed(1)} s of it colorizing)${note}.`, "done");
      this.after.toBlob((png) => {
        URL.revokeObjectURL(this.download.href);
        this.download.href = URL.createObjectURL(png);
        this.download.download = `${name.replace(/\.[^.]*$/, "")}_color.png`;
        this.download.hidden = false;
      }, "image/png");
    } catch (err) {
      this.progress.hidden = true;
      this.say(`Could not colorize ${name}: ${err.message}`, "error");
    }
  }

  colorize(id, bitmap) {
    return new Promise((resolve, reject) => {
      const listen = ({ data }) => {
        if (data.id !== id) return;
        if (data.type === "working") {
          this.say(`Colorizing ${bitmap.width}×${bitmap.height} px: ${Math.round(data.fraction * 100)}%`);
          return;
        }
        this.worker.removeEventListener("message", listen);
        if (data.type === "result") resolve(data);
        else reject(new Error(data.message));
      };
      this.worker.addEventListener("message", listen);
      this.worker.postMessage({ type: "colorize", id, bitmap }, [bitmap]);
    });
  }
}

async function start(root) {
  let manifest;
  try {
    manifest = await fetchJson("model/model.json");
  } catch {
    root.dataset.state = "no-model";
    root.replaceChildren(element("p", { class: "clw-missing" },
      "The colorizer needs a published model, and this build has none (`make book` adds it from ../shared/models or the download)."));
    return;
  }
  const oldPhotos = await fetchJson("old-photos/index.json").catch(() => []);
  root.widget = new Widget(root, manifest, oldPhotos);
}

const stylesheet = element("link", { rel: "stylesheet", href: new URL("widget.css", BASE).href });
document.head.append(stylesheet);
document.querySelectorAll(".colorlab-widget").forEach(start);

// The draw-a-digit page: strokes on a canvas -> a prediction -> bars, input, feature maps.
// Served by `lenet5 serve`, it asks POST /api/predict. On the static site of `lenet5 export
// --format web`, static/engine.js is loaded first and the page computes in the browser
// instead (the "local" section below). Plain JavaScript, no build step, and nothing from the
// network but the page's own files.
"use strict";

const engine = globalThis.LeNet5Engine;  // the JavaScript engine, on the static site only
const LOCAL = engine !== undefined;
const SEND_SIDE = 112;   // px of a drawing as sent (or computed on): 4x MNIST's 28, plenty
const PHOTO_SIDE = 256;  // px a photo is scaled to before local preprocessing (as in Python)
const STROKE = 0.075;    // stroke width as a fraction of the canvas side
const THROTTLE_MS = LOCAL ? 40 : 150; // while drawing, predict at most this often
const INK = "#111";
const PAPER = "#fff";

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");
const sendCanvas = document.createElement("canvas");
sendCanvas.width = sendCanvas.height = SEND_SIDE;
const sendCtx = sendCanvas.getContext("2d", { willReadFrequently: LOCAL });

const state = {
  strokes: [],    // each stroke: [[x, y], ...] in 0-1 canvas coordinates
  active: null,   // {id, points} of the pointer drawing now
  photo: null,    // {file, bitmap} of an uploaded image shown instead of strokes
  classes: [...Array(10).keys()].map(String),
};
let timer = 0;          // pending throttled prediction
let inFlight = null;    // AbortController of the request in flight
let sequence = 0;       // answers to older requests are dropped
let frame = 0;          // pending animation frame for redraw

// --- drawing ----------------------------------------------------------------------------

function paintStrokes(context, side, strokes) {
  context.fillStyle = PAPER;
  context.fillRect(0, 0, side, side);
  context.strokeStyle = context.fillStyle = INK;
  context.lineWidth = STROKE * side;
  context.lineCap = context.lineJoin = "round";
  for (const points of strokes) {
    const p = points.map(([x, y]) => [x * side, y * side]);
    context.beginPath();
    if (p.length === 1) {  // a tap: a round dot
      context.arc(p[0][0], p[0][1], context.lineWidth / 2, 0, 2 * Math.PI);
      context.fill();
      continue;
    }
    context.moveTo(p[0][0], p[0][1]);
    for (let i = 1; i < p.length - 1; i++) {  // smooth: curve through the midpoints
      context.quadraticCurveTo(p[i][0], p[i][1], (p[i][0] + p[i + 1][0]) / 2,
                               (p[i][1] + p[i + 1][1]) / 2);
    }
    context.lineTo(p[p.length - 1][0], p[p.length - 1][1]);
    context.stroke();
  }
}

function paintPhoto(context, side, bitmap) {
  context.fillStyle = PAPER;
  context.fillRect(0, 0, side, side);
  if (!bitmap) return;
  const scale = Math.min(side / bitmap.width, side / bitmap.height);
  const w = bitmap.width * scale, h = bitmap.height * scale;
  context.drawImage(bitmap, (side - w) / 2, (side - h) / 2, w, h);
}

function redraw() {
  frame = 0;
  if (state.photo) paintPhoto(ctx, canvas.width, state.photo.bitmap);
  else paintStrokes(ctx, canvas.width, state.strokes);
  const empty = !state.photo && state.strokes.length === 0;
  $("pad-hint").hidden = !empty;
  $("undo").disabled = empty;
  $("clear").disabled = empty;
}

function requestRedraw() {
  if (!frame) frame = requestAnimationFrame(redraw);
}

function fitCanvas() {  // the backing store follows the CSS size and the pixel ratio
  const side = Math.round(canvas.getBoundingClientRect().width * (window.devicePixelRatio || 1));
  if (side > 0 && side !== canvas.width) {
    canvas.width = canvas.height = side;
    redraw();
  }
}

function point(event) {
  const r = canvas.getBoundingClientRect();
  const clamp = (v) => Math.min(1, Math.max(0, v));
  return [clamp((event.clientX - r.left) / r.width), clamp((event.clientY - r.top) / r.height)];
}

canvas.addEventListener("pointerdown", (event) => {
  if (state.active || (event.pointerType === "mouse" && event.button !== 0)) return;
  event.preventDefault();
  canvas.setPointerCapture(event.pointerId);
  state.photo = null;  // drawing starts over from an uploaded photo
  state.active = { id: event.pointerId, points: [point(event)] };
  state.strokes.push(state.active.points);
  requestRedraw();
  schedulePrediction();
});

canvas.addEventListener("pointermove", (event) => {
  if (!state.active || event.pointerId !== state.active.id) return;
  const events = event.getCoalescedEvents ? event.getCoalescedEvents() : [];
  for (const e of events.length ? events : [event]) state.active.points.push(point(e));
  requestRedraw();
  schedulePrediction();
});

function endStroke(event) {
  if (!state.active || event.pointerId !== state.active.id) return;
  state.active = null;
  schedulePrediction();
}
canvas.addEventListener("pointerup", endStroke);
canvas.addEventListener("pointercancel", endStroke);

function undo() {
  if (state.photo) state.photo = null;
  else state.strokes.pop();
  state.active = null;
  redraw();
  schedulePrediction();
}

function clear() {
  state.strokes = [];
  state.photo = null;
  state.active = null;
  redraw();
  schedulePrediction();
}

// --- photos -----------------------------------------------------------------------------

async function usePhoto(file) {
  if (!file) return;
  let bitmap = null;
  try {
    bitmap = await createImageBitmap(file, { imageOrientation: "from-image" });
  } catch {
    // not previewable here (e.g. TIFF); the server may still read it
  }
  state.strokes = [];
  state.active = null;
  state.photo = { file, bitmap };
  redraw();
  if (LOCAL) predictLocally(bitmap && photoImage(bitmap), `the photo ${file.name}`);
  else send(file, file.type || "application/octet-stream", `the photo ${file.name}`);
}

$("upload").addEventListener("click", () => $("file").click());
$("file").addEventListener("change", (event) => {
  usePhoto(event.target.files[0]);
  event.target.value = "";  // choosing the same file again still fires change
});

let dragDepth = 0;
const hasFiles = (event) => [...(event.dataTransfer?.types || [])].includes("Files");
document.addEventListener("dragenter", (event) => {
  if (!hasFiles(event)) return;
  dragDepth++;
  $("drop").hidden = false;
});
document.addEventListener("dragleave", () => {
  dragDepth = Math.max(0, dragDepth - 1);
  if (!dragDepth) $("drop").hidden = true;
});
document.addEventListener("dragover", (event) => {
  if (hasFiles(event)) event.preventDefault();
});
document.addEventListener("drop", (event) => {
  if (!hasFiles(event)) return;
  event.preventDefault();
  dragDepth = 0;
  $("drop").hidden = true;
  usePhoto(event.dataTransfer.files[0]);
});

// --- asking the server ------------------------------------------------------------------

function schedulePrediction() {
  if (!timer) timer = setTimeout(predict, THROTTLE_MS);
}

function predict() {
  timer = 0;
  if (state.photo) return;  // a photo is sent once, when chosen
  if (state.strokes.length === 0) {
    abortInFlight();
    showEmpty();
    return;
  }
  paintStrokes(sendCtx, SEND_SIDE, state.strokes);
  if (LOCAL) predictLocally(sendCtx.getImageData(0, 0, SEND_SIDE, SEND_SIDE), "the drawing");
  else sendCanvas.toBlob((blob) => send(blob, "image/png", "the drawing"), "image/png");
}

function abortInFlight() {
  sequence++;
  if (inFlight) inFlight.abort();
  inFlight = null;
}

async function send(body, type, what) {
  abortInFlight();
  const controller = new AbortController();
  const mine = sequence;
  inFlight = controller;
  try {
    const response = await fetch("/api/predict", {
      method: "POST", headers: { "Content-Type": type }, body, signal: controller.signal,
    });
    const answer = await response.json().catch(() => ({}));
    if (mine !== sequence) return;
    if (response.ok) showAnswer(answer);
    else showError(answer.error || `The server answered ${response.status} for ${what}.`);
  } catch (error) {
    if (error.name !== "AbortError" && mine === sequence) {
      showError(`Cannot reach the server (${error.message}); is lenet5 serve still running?`);
    }
  } finally {
    if (inFlight === controller) inFlight = null;
  }
}

// --- showing answers --------------------------------------------------------------------

const percent = (p) => `${(100 * p).toFixed(p >= 0.9995 || p < 0.0005 ? 0 : 1)}%`;

function buildBars() {
  $("bars").replaceChildren(...state.classes.map((name) => {
    const item = document.createElement("li");
    item.innerHTML = '<span class="name"></span><span class="track"><span class="fill">' +
      '</span></span><span class="value">–</span>';
    item.querySelector(".name").textContent = name;
    return item;
  }));
}

function setBars(probs) {
  const best = probs ? probs.indexOf(Math.max(...probs)) : -1;
  [...$("bars").children].forEach((item, k) => {
    const p = probs ? probs[k] : 0;
    item.classList.toggle("best", k === best);
    item.querySelector(".fill").style.width = `${100 * p}%`;
    item.querySelector(".value").textContent = probs ? percent(p) : "–";
    item.setAttribute("aria-label", `${state.classes[k]}: ${probs ? percent(p) : "no value"}`);
  });
}

function buildLayers(layers) {  // layers: [{name, count, side, caption}]
  $("layers").replaceChildren(...layers.map((layer) => {
    const block = document.createElement("figure");
    block.className = "layer";
    block.dataset.name = layer.name;
    const grid = document.createElement("div");
    grid.className = "grid";
    grid.style.setProperty("--cols", Math.ceil(Math.sqrt(layer.count)));
    for (let i = 0; i < layer.count; i++) {
      const img = document.createElement("img");
      img.alt = `${layer.name} feature map ${i + 1}`;
      img.width = img.height = layer.side;
      grid.append(img);
    }
    const caption = document.createElement("figcaption");
    caption.innerHTML = "<strong></strong> <span></span>";
    caption.querySelector("strong").textContent = layer.name;
    caption.querySelector("span").textContent = layer.caption;
    block.append(grid, caption);
    return block;
  }));
}

function setLayers(layers) {
  const blocks = [...$("layers").children];
  const fits = layers.length === blocks.length && layers.every((layer, i) =>
    blocks[i].dataset.name === layer.name &&
    blocks[i].querySelectorAll("img").length === layer.maps.length);
  if (!fits) buildLayers(layers.map((l) => ({ name: l.name, count: l.maps.length, side: 28,
                                              caption: `${l.maps.length} maps` })));
  layers.forEach((layer, i) => {
    $("layers").children[i].querySelectorAll("img").forEach((img, k) => {
      img.src = layer.maps[k];
    });
  });
}

function showAnswer(answer) {
  const name = state.classes[answer.label] ?? String(answer.label);
  $("label").textContent = name;
  $("label").classList.remove("stale");
  $("confidence").textContent = `${percent(answer.confidence)} sure`;
  $("status").textContent = "";
  setBars(answer.probs);
  $("input").src = answer.input;
  $("input").classList.remove("stale");
  setLayers(answer.layers);
  $("layers").classList.remove("stale");
  if (!state.active) {
    $("announce").textContent = `Prediction: ${name}, ${percent(answer.confidence)} sure.`;
  }
}

function showError(message) {
  $("label").textContent = "?";
  $("confidence").textContent = "No prediction.";
  $("status").textContent = message;
  setBars(null);
  $("input").classList.add("stale");
  $("layers").classList.add("stale");
  $("announce").textContent = message;
}

function showEmpty() {
  $("label").textContent = "?";
  $("confidence").textContent = "Draw a digit to start.";
  $("status").textContent = "";
  setBars(null);
  $("input").removeAttribute("src");
  $("layers").querySelectorAll("img").forEach((img) => img.removeAttribute("src"));
}

// --- the model --------------------------------------------------------------------------

const KINDS = {
  conv: (l) => `${l.window}×${l.window} convolution`,
  maxpool: (l) => `${l.window}×${l.window} max-pooling`,
  avgpool: (l) => `${l.window}×${l.window} average pooling`,
  subsample: (l) => `${l.window}×${l.window} subsampling`,
  dense: () => "fully connected",
  rbf: () => "Euclidean RBF output",
};
const ACTIVATIONS = { relu: "ReLU", tanh: "tanh", sigmoid: "sigmoid", scaled_tanh: "scaled tanh" };

function describe(layer) {
  const kind = (KINDS[layer.type] || (() => layer.type))(layer);
  return layer.activation ? `${kind} + ${ACTIVATIONS[layer.activation] || layer.activation}`
                          : kind;
}

async function fetchOk(url) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`${url}: HTTP ${response.status}`);
  return response;
}

async function loadModel() {
  try {
    const model = LOCAL ? await local.ready : await fetchOk("/api/model").then((r) => r.json());
    state.classes = model.classes.map(String);
    const accuracy = model.test_accuracy == null ? ""
      : ` · test accuracy ${(100 * model.test_accuracy).toFixed(2)}%`;
    $("model-info").textContent = `${model.arch} · ${model.engine} engine · ` +
      `${model.parameters.toLocaleString("en")} parameters${accuracy}`;
    $("arch-rows").replaceChildren(...model.layers.map((layer) => {
      const row = document.createElement("tr");
      for (const text of [layer.name, describe(layer), layer.output.join("×"),
                          layer.params.toLocaleString("en")]) {
        const cell = document.createElement("td");
        cell.textContent = text;
        row.append(cell);
      }
      return row;
    }));
    buildLayers(model.layers
      .filter((l) => l.output.length === 3 && l.output[1] * l.output[2] > 1)
      .map((l) => ({ name: l.name, count: l.output[0], side: l.output[1],
                     caption: `${l.output[0]} × ${l.output[1]}×${l.output[2]} · ${describe(l)}` })));
  } catch (error) {
    $("model-info").textContent = LOCAL && location.protocol === "file:"
      ? "Open this page from a web server (python -m http.server in its folder), not as a " +
        "file: browsers do not let a file read model.safetensors."
      : `Cannot read the model's description (${error.message}).`;
  }
  buildBars();
  setBars(null);
}

// --- computing in the browser (the static site) -----------------------------------------

const local = { network: null, ready: null };
const grayCanvas = document.createElement("canvas");

/** Load model.json (the layers) and model.safetensors (the weights); resolves to the model's
 *  description in the shape GET /api/model answers. */
async function loadNetwork() {
  const [description, weights] = await Promise.all([
    fetchOk("model.json").then((r) => r.json()),
    fetchOk("model.safetensors").then((r) => r.arrayBuffer()),
  ]);
  local.network = new engine.Network(description, engine.readSafetensors(weights).tensors);
  const layers = local.network.summary().map((l) => ({ ...l, type: l.kind }));
  return { arch: description.arch, engine: "JavaScript", classes: description.classes,
           parameters: layers.reduce((n, l) => n + l.params, 0),
           test_accuracy: description.model.test_accuracy, layers };
}

/** A PNG data URL of a (height, width) grey image: values 0-255, or with `stretch` any
 *  values scaled to 0-255 on their own, as the server shows feature maps. */
function grayUrl(values, width, height, stretch) {
  let low = 0, scale = 1;
  if (stretch) {
    low = Math.min(...values);
    const span = Math.max(...values) - low;
    scale = span > 0 ? 255 / span : 0;
  }
  grayCanvas.width = width;
  grayCanvas.height = height;
  const context = grayCanvas.getContext("2d");
  const image = context.createImageData(width, height);
  values.forEach((v, i) => {
    image.data.fill(Math.round((v - low) * scale), 4 * i, 4 * i + 3);
    image.data[4 * i + 3] = 255;
  });
  context.putImageData(image, 0, 0);
  return grayCanvas.toDataURL("image/png");
}

/** The answer POST /api/predict would give for these 784 pixels. */
function localAnswer(pixels) {
  const { label, probs, layers } = local.network.run(pixels);
  const pictured = layers.filter((l) => l.shape.length === 3 && l.shape[1] * l.shape[2] > 1);
  return {
    label, confidence: probs[label], probs, input: grayUrl(pixels, 28, 28, false),
    layers: pictured.map(({ name, shape: [count, h, w], data }) => ({
      name,
      maps: Array.from({ length: count },
                       (_, k) => grayUrl(data.subarray(k * h * w, (k + 1) * h * w), w, h, true)),
    })),
  };
}

function predictLocally(image, what) {
  if (!local.network) return;  // still loading: predicted once it has loaded
  if (!image) {
    showError(`This browser cannot read ${what}; use a PNG or JPEG.`);
    return;
  }
  const pixels = engine.preprocess(image);
  if (pixels) showAnswer(localAnswer(pixels));
  else showError(`No digit in ${what}: nothing stands out from the background; use an image ` +
                 "of one digit that stands out clearly.");
}

/** A photo as ImageData at most PHOTO_SIDE px, transparency on white paper. */
function photoImage(bitmap) {
  const scale = Math.min(1, PHOTO_SIDE / Math.max(bitmap.width, bitmap.height));
  const work = document.createElement("canvas");
  work.width = Math.max(1, Math.round(bitmap.width * scale));
  work.height = Math.max(1, Math.round(bitmap.height * scale));
  const context = work.getContext("2d", { willReadFrequently: true });
  context.imageSmoothingQuality = "high";
  context.fillStyle = PAPER;
  context.fillRect(0, 0, work.width, work.height);
  context.drawImage(bitmap, 0, 0, work.width, work.height);
  return context.getImageData(0, 0, work.width, work.height);
}

// --- keyboard and start -----------------------------------------------------------------

$("undo").addEventListener("click", undo);
$("clear").addEventListener("click", clear);
document.addEventListener("keydown", (event) => {
  if (event.target.matches?.("input, textarea")) return;
  if ((event.ctrlKey || event.metaKey) && !event.shiftKey && event.key.toLowerCase() === "z") {
    event.preventDefault();
    undo();
  } else if (event.key === "Escape" && !event.ctrlKey && !event.metaKey) {
    clear();
  }
});

document.querySelectorAll(".origin").forEach((el) => { el.textContent = location.origin; });
if (LOCAL) {
  document.querySelectorAll("[data-only]").forEach((el) => {
    el.hidden = el.dataset.only !== "static";
  });
  local.ready = loadNetwork();
  local.ready.then(() => (state.photo ? usePhoto(state.photo.file) : schedulePrediction()),
                   () => {});  // loadModel shows the error
  // the test hook: classify(784 pixels, 28x28 row-major, 0-255, ink bright) -> {label, probs}
  window.lenet5 = {
    ready: local.ready,
    classify(pixels) {
      if (!local.network) throw new Error("the model is not loaded yet; await lenet5.ready first");
      return local.network.classify(pixels);
    },
  };
}
new ResizeObserver(fitCanvas).observe(canvas);
fitCanvas();
redraw();
buildBars();
loadModel();

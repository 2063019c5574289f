// The draw-a-digit page: strokes on a canvas -> a reading -> the number, a box per digit,
// bars, input, feature maps. Served by `lenet5 serve`, it asks POST /api/predict, which reads
// every digit of a number or says that a mark is not a digit. On the static site of `lenet5
// export --format web`, static/engine.js is loaded first and the page computes one digit in
// the browser instead (the "local" section below). Plain JavaScript, no build step, and
// nothing from the network but the page's own files.
"use strict";

const engine = globalThis.LeNet5Engine;  // the JavaScript engine, on the static site only
const LOCAL = engine !== undefined;
const ASPECT = LOCAL ? 1 : 1.5;  // pad width / height: room for a number where one is read
const SEND_HEIGHT = LOCAL ? 112 : 160;  // px of a drawing as sent (or computed on): one digit
                                        // at 4x MNIST's 28 is plenty; a number's are smaller
const PHOTO_SIDE = 256;  // px a photo is scaled to before local preprocessing (as in Python)
const STROKE = 0.075;    // stroke width as a fraction of the canvas height
const THROTTLE_MS = LOCAL ? 40 : 150; // while drawing, predict at most this often
const INK = "#111";
const PAPER = "#fff";

const $ = (id) => document.getElementById(id);
const canvas = $("canvas");
const ctx = canvas.getContext("2d");
const sendCanvas = document.createElement("canvas");
sendCanvas.height = SEND_HEIGHT;
sendCanvas.width = Math.round(SEND_HEIGHT * ASPECT);
const sendCtx = sendCanvas.getContext("2d", { willReadFrequently: true });

const state = {
  strokes: [],    // each stroke: [[x, y], ...] in 0-1 canvas coordinates
  active: null,   // {id, points} of the pointer drawing now
  photo: null,    // {file, bitmap} of an uploaded image shown instead of strokes
  reading: null,  // {answer, picture: {width, height} or null, selected} shown now
  classes: [...Array(10).keys()].map(String),
};
let timer = 0;          // pending throttled prediction
let inFlight = null;    // AbortController of the request in flight
let sequence = 0;       // answers to older requests are dropped
let frame = 0;          // pending animation frame for redraw

// --- drawing ----------------------------------------------------------------------------

function paintStrokes(context, width, height, strokes) {
  context.fillStyle = PAPER;
  context.fillRect(0, 0, width, height);
  context.strokeStyle = context.fillStyle = INK;
  context.lineWidth = STROKE * height;
  context.lineCap = context.lineJoin = "round";
  for (const points of strokes) {
    const p = points.map(([x, y]) => [x * width, y * height]);
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

/** Where a picture (width x height) lies when shown whole and centred in a frame. */
function fitted(frameWidth, frameHeight, width, height) {
  const scale = Math.min(frameWidth / width, frameHeight / height);
  return { scale, left: (frameWidth - width * scale) / 2, top: (frameHeight - height * scale) / 2 };
}

function paintPhoto(context, width, height, { file, bitmap }) {
  context.fillStyle = PAPER;
  context.fillRect(0, 0, width, height);
  if (!bitmap) {  // a TIFF, or no picture at all: say what was chosen, not a blank pad
    context.fillStyle = "#6b7280";
    context.textAlign = "center";
    context.font = `${Math.round(height / 16)}px system-ui, sans-serif`;
    context.fillText(file.name, width / 2, height / 2, width * 0.9);
    context.fillText("(this browser cannot show it)", width / 2, height / 2 + height / 12,
                     width * 0.9);
    return;
  }
  const { scale, left, top } = fitted(width, height, bitmap.width, bitmap.height);
  context.drawImage(bitmap, left, top, bitmap.width * scale, bitmap.height * scale);
}

function redraw() {
  frame = 0;
  if (state.photo) paintPhoto(ctx, canvas.width, canvas.height, state.photo);
  else paintStrokes(ctx, canvas.width, canvas.height, state.strokes);
  const empty = !state.photo && state.strokes.length === 0;
  $("pad-hint").hidden = !empty;
  const focused = document.activeElement;  // on a control that goes away with the drawing?
  const lost = empty &&
    ([$("undo"), $("clear")].includes(focused) || $("digits").contains(focused));
  $("undo").disabled = empty;
  $("clear").disabled = empty;
  if (lost) $("upload").focus();  // else it drops to the page's start
}

function requestRedraw() {
  if (!frame) frame = requestAnimationFrame(redraw);
}

function fitCanvas() {  // the backing store follows the CSS size and the pixel ratio
  const { width, height } = canvas.getBoundingClientRect();
  const ratio = window.devicePixelRatio || 1;
  const w = Math.round(width * ratio), h = Math.round(height * ratio);
  if (w > 0 && h > 0 && (w !== canvas.width || h !== canvas.height)) {
    canvas.width = w;
    canvas.height = h;
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
  if (state.photo) {  // drawing starts over from an uploaded photo, whose answer is void
    state.photo = null;
    abortInFlight();
    showBoxes(null);
  }
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
  showBoxes(null);
  redraw();
  if (LOCAL) predictLocally(bitmap && photoImage(bitmap), `the photo ${file.name}`);
  else send(file, file.type || "application/octet-stream", `the photo ${file.name}`,
            bitmap && { width: bitmap.width, height: bitmap.height });
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
  setBusy();
}

/** aria-busy on the reading while what it shows is not yet the answer to what is drawn. */
function setBusy(busy = true) {
  $("result").setAttribute("aria-busy", String(busy));
}

function predict() {
  timer = 0;
  if (state.photo) return;  // a photo is sent once, when chosen
  abortInFlight();  // an answer to fewer strokes, arriving from now on, would look final
  if (state.strokes.length === 0) {
    showEmpty();
    return;
  }
  const { width, height } = sendCanvas;
  paintStrokes(sendCtx, width, height, state.strokes);
  if (LOCAL) {
    predictLocally(sendCtx.getImageData(0, 0, width, height), "the drawing");
    return;
  }
  const mine = sequence;  // cleared, undone or replaced by a photo meanwhile: not sent
  drawingPng().then(
    (blob) => mine === sequence && send(blob, "image/png", "the drawing", { width, height }),
    (error) => mine === sequence && showError(`Cannot encode the drawing (${error.message}).`));
}

/** The drawing on sendCanvas as a PNG: 8-bit grey where the browser can deflate (smaller,
 * and the server decodes it in a third of the time the canvas's own RGBA PNG takes). */
function drawingPng() {
  if (typeof CompressionStream === "undefined") {
    return new Promise((resolve) => sendCanvas.toBlob(resolve, "image/png"));
  }
  return greyPng(sendCtx.getImageData(0, 0, sendCanvas.width, sendCanvas.height));
}

const CRC_TABLE = Uint32Array.from({ length: 256 }, (_, n) => {
  for (let bit = 0; bit < 8; bit++) n = n & 1 ? 0xEDB88320 ^ (n >>> 1) : n >>> 1;
  return n;
});

function crc32(bytes) {
  let crc = 0xFFFFFFFF;
  for (const byte of bytes) crc = CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >>> 8);
  return (crc ^ 0xFFFFFFFF) >>> 0;
}

function pngChunk(type, data) {
  const chunk = new Uint8Array(12 + data.length);  // length, type, data, CRC of type + data
  const view = new DataView(chunk.buffer);
  view.setUint32(0, data.length);
  chunk.set([...type].map((c) => c.charCodeAt(0)), 4);
  chunk.set(data, 8);
  view.setUint32(8 + data.length, crc32(chunk.subarray(4, 8 + data.length)));
  return chunk;
}

/** ImageData as an 8-bit grey PNG with unfiltered rows, grey as Pillow's convert("L") makes
 * it. */
async function greyPng({ width, height, data }) {
  const rows = new Uint8Array((width + 1) * height);  // each row: filter type 0, its pixels
  for (let y = 0; y < height; y++) {
    for (let x = 0; x < width; x++) {
      const i = 4 * (y * width + x);
      rows[y * (width + 1) + 1 + x] =
        (19595 * data[i] + 38470 * data[i + 1] + 7471 * data[i + 2] + 0x8000) >>> 16;
    }
  }
  const zlib = new Blob([rows]).stream().pipeThrough(new CompressionStream("deflate"));
  const header = new Uint8Array(13);  // width, height, bit depth 8, then 0s: grey, deflate,
  const fields = new DataView(header.buffer);  // no filtering method, no interlace
  fields.setUint32(0, width);
  fields.setUint32(4, height);
  header[8] = 8;
  const signature = Uint8Array.of(0x89, 0x50, 0x4E, 0x47, 0x0D, 0x0A, 0x1A, 0x0A);
  return new Blob([signature, pngChunk("IHDR", header),
                   pngChunk("IDAT", new Uint8Array(await new Response(zlib).arrayBuffer())),
                   pngChunk("IEND", new Uint8Array(0))], { type: "image/png" });
}

function abortInFlight() {
  sequence++;
  if (inFlight) inFlight.abort();
  inFlight = null;
}

/** The server's error about `what` was posted, which it calls "the uploaded image", as a
 *  sentence of this page's: "The drawing contains no digit: ...". */
const inOurWords = (error, what) =>
  error && error.replace(/^the uploaded image\b/, what).replace(/^./, (c) => c.toUpperCase());

/** POST the picture; `picture` ({width, height}) is its size, where the answer's boxes lie. */
async function send(body, type, what, picture) {
  abortInFlight();
  const controller = new AbortController();
  const mine = sequence;
  inFlight = controller;
  setBusy();
  try {
    const response = await fetch("/api/predict", {
      method: "POST", headers: { "Content-Type": type }, body, signal: controller.signal,
    });
    const answer = await response.json().catch(() => ({}));
    if (mine !== sequence) return;
    if (response.ok) showAnswer(answer, picture);
    else showError(inOurWords(answer.error, what) ||
                   `The server answered ${response.status} for ${what}.`);
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
    for (let i = 0; i < layer.count; i++) {  // each shows its own part of the layer's strip
      const img = document.createElement("img");
      img.alt = `${layer.name} feature map ${i + 1}`;
      img.width = img.height = layer.side;
      img.style.objectPosition = `${layer.count > 1 ? (100 * i) / (layer.count - 1) : 0}% 0`;
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
    blocks[i].querySelectorAll("img").length === layer.count);
  if (!fits) buildLayers(layers.map((l) => ({ name: l.name, count: l.count, side: 28,
                                              caption: `${l.count} maps` })));
  layers.forEach((layer, i) => {
    $("layers").children[i].querySelectorAll("img").forEach((img) => {
      img.src = layer.strip;
    });
  });
}

// --- the reading: the number, its digits' boxes, the one chosen ------------------------------

const nameOf = (label) => state.classes[label] ?? String(label);
const sentence = (text) => text.charAt(0).toUpperCase() + text.slice(1) + ".";

/** What to show for an answer: the label's kind (its look) and parts, the headline, the
 *  detail under it and the words announced. An answer with `digits` is a server's reading;
 *  one without is the static site's single digit. */
function viewOf(answer) {
  const digits = answer.digits;
  if (!digits || (digits.length === 1 && !answer.rejected)) {  // one digit, as always
    const name = nameOf(answer.label), sure = `${percent(answer.confidence)} sure`;
    return { kind: "digit", parts: [name], headline: sure, detail: "",
             spoken: `Prediction: ${name}, ${sure}.` };
  }
  if (!answer.rejected) {
    const sure = `${percent(answer.confidence)} sure of all`;
    return { kind: "number", parts: [answer.text], headline: `${digits.length} digits, ${sure}`,
             detail: "", spoken: `Read the number ${answer.text}: ${digits.length} digits, ${sure}.` };
  }
  const reason = sentence(markByPlace(answer.rejected, digits));
  const accepted = digits.filter((d) => d.label != null).length;
  if (accepted && accepted < digits.length) {  // some marks are digits, others not
    return {
      kind: "partial",
      parts: digits.map((d) => (d.label == null ? slot() : nameOf(d.label))),
      headline: `Partly read: ${accepted} of ${digits.length} marks are digits`,
      detail: reason,
      spoken: `Partly read: ${digits.map((d) => (d.label == null ? "not a digit"
                                                                   : nameOf(d.label))).join(", ")}. ${reason}`,
    };
  }
  return { kind: "refused", parts: ["Not a digit"], headline: "Refused, not guessed",
           detail: reason, spoken: `Not a digit. ${reason}` };
}

/** The server names a refused mark by its box in the picture's pixels ("the mark at [162, 74,
 *  174, 86] is ..."); the page, by its place among the marks: "mark 2 of 3 is ...". */
function markByPlace(rejected, digits) {
  return rejected.replace(/^the mark at (\[[^\]]*\]) is/, (whole, box) => {
    const index = digits.findIndex((d) => JSON.stringify(d.box) === box.replace(/\s/g, ""));
    return index < 0 ? whole : `mark ${index + 1} of ${digits.length} is`;
  });
}

function slot() {  // a refused mark inside a number: an empty dashed place
  const mark = document.createElement("span");
  mark.className = "slot";
  mark.innerHTML = '<span class="sr-only"> (not a digit) </span>';
  return mark;
}

/** A digit's badge text and its description for assistive technology. */
function digitWords(answer, index) {
  const digit = answer.digits[index];
  // refused itself, or with the whole reading (marks too crowded to be digits side by side,
  // 1s slanting apart, none of them read surely, or one piece of ink cut into marks not all
  // read surely: each mark keeps its label, and `rejected` says why)
  const refused = digit.label == null ||
    Boolean(answer.rejected && answer.digits.every((d) => d.label != null));
  const guess = `best guess ${nameOf(digit.top[0][0])}, ${percent(digit.top[0][1])}`;
  return refused ? { badge: "✕", refused, words: `mark ${index + 1}: not a digit (${guess})` }
                 : { badge: nameOf(digit.label), refused,
                     words: `digit ${index + 1}: ${nameOf(digit.label)}, ${percent(digit.confidence)} sure` };
}

/** Draw a box over the pad for each digit of the reading (none for `null`), where it lies
 *  in the picture, with its label on a badge that chooses it. */
function showBoxes(reading) {
  const layer = $("boxes");
  if (!reading || !reading.picture || !reading.answer.digits) {
    layer.replaceChildren();
    return;
  }
  const { width, height } = reading.picture;
  const place = fitted(ASPECT, 1, width, height);  // the pad is ASPECT x 1
  layer.replaceChildren(...reading.answer.digits.map((digit, index) => {
    const [x0, y0, x1, y1] = digit.box;
    const box = document.createElement("div");
    const words = digitWords(reading.answer, index);
    const top = (place.top + y0 * place.scale) * 100;
    box.className = "box" + (words.refused ? " refused" : "") + (top < 14 ? " near-top" : "");
    box.style.left = `${((place.left + x0 * place.scale) / ASPECT) * 100}%`;
    box.style.top = `${top}%`;
    box.style.width = `${((x1 - x0) * place.scale / ASPECT) * 100}%`;
    box.style.height = `${(y1 - y0) * place.scale * 100}%`;
    const badge = document.createElement("span");
    badge.className = "badge";
    badge.textContent = words.badge;
    badge.title = `Show the probabilities of ${words.words.replace(/:.*/, "")}`;
    badge.addEventListener("click", () => choose(index));
    box.append(badge);
    return box;
  }));
}

/** A button per digit of a number, to choose whose probabilities the bars show. */
function showChips(answer) {
  const chips = $("digits");
  const digits = answer.digits || [];
  chips.hidden = digits.length < 2;
  chips.replaceChildren(...(chips.hidden ? [] : digits.map((_, index) => {
    const words = digitWords(answer, index);
    const chip = document.createElement("button");
    chip.type = "button";
    chip.className = "chip" + (words.refused ? " refused" : "");
    chip.textContent = words.badge;
    chip.setAttribute("aria-label", words.words);
    chip.setAttribute("aria-pressed", "false");
    chip.addEventListener("click", () => choose(index));
    return chip;
  })));
}

/** Show the probabilities and the 28x28 input of digit `index` of the reading. */
function choose(index) {
  const reading = state.reading;
  if (!reading?.answer.digits?.[index]) return;
  reading.selected = index;
  const { answer } = reading;
  const digit = answer.digits[index];
  setBars(digit.probs || answer.probs);
  $("input").src = digit.input || answer.input;
  const several = answer.digits.length > 1;
  [...$("boxes").children].forEach((box, k) => {
    box.classList.toggle("selected", several && k === index);
  });
  [...$("digits").children].forEach((chip, k) => {
    chip.setAttribute("aria-pressed", String(k === index));
  });
  const words = digitWords(answer, index);
  $("bars-for").hidden = !several && !words.refused;
  $("bars-for").textContent = words.refused
    ? `${several ? `Mark ${index + 1} of ${answer.digits.length}: n` : "N"}ot a digit. ` +
      "The network's guesses, none sure enough:"
    : `Digit ${index + 1} of ${answer.digits.length}, read as ${words.badge}:`;
}

function showAnswer(answer, picture = null) {
  const view = viewOf(answer);
  $("label").className = `label ${view.kind}`;
  $("label").replaceChildren(...view.parts);
  $("result").dataset.state = view.kind;
  $("confidence").textContent = view.headline;
  $("status").textContent = view.detail;
  state.reading = { answer, picture, selected: 0 };
  showBoxes(state.reading);
  showChips(answer);
  if (answer.digits?.length) {
    choose(0);
  } else {
    setBars(answer.digits ? null : answer.probs);  // the server read no mark: no digit's bars
    $("input").src = answer.input;
    $("bars-for").hidden = !answer.digits;
    $("bars-for").textContent = "No mark was read as a digit.";
  }
  $("input").classList.remove("stale");
  setLayers(answer.layers);
  $("layers").classList.remove("stale");
  $("maps-for").hidden = !(answer.digits?.length > 1);
  if (!state.active) $("announce").textContent = view.spoken;
  setBusy(Boolean(timer));
}

function showNothing(headline, message) {
  $("label").className = "label";
  $("label").textContent = "?";
  delete $("result").dataset.state;
  $("confidence").textContent = headline;
  $("status").textContent = message;
  state.reading = null;
  showBoxes(null);
  showChips({});
  $("bars-for").hidden = true;
  $("maps-for").hidden = true;
  setBars(null);
  setBusy(Boolean(timer));
}

function showError(message) {
  showNothing("No prediction.", message);
  $("input").classList.add("stale");
  $("layers").classList.add("stale");
  $("announce").textContent = message;
}

function showEmpty() {
  showNothing(LOCAL ? "Draw a digit to start." : "Draw a digit or a number to start.", "");
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

/** A PNG data URL of `count` (height, width) grey images side by side, as the server sends a
 *  layer's maps: values 0-255, or with `stretch` each image's values scaled to 0-255 on their
 *  own. */
function grayUrl(values, count, width, height, stretch) {
  grayCanvas.width = count * width;
  grayCanvas.height = height;
  const context = grayCanvas.getContext("2d");
  const image = context.createImageData(count * width, height);
  for (let k = 0; k < count; k++) {
    const map = values.subarray(k * width * height, (k + 1) * width * height);
    let low = 0, scale = 1;
    if (stretch) {
      low = Math.min(...map);
      const span = Math.max(...map) - low;
      scale = span > 0 ? 255 / span : 0;
    }
    map.forEach((v, i) => {
      const at = 4 * ((Math.floor(i / width) * count + k) * width + (i % width));
      image.data.fill(Math.round((v - low) * scale), at, at + 3);
      image.data[at + 3] = 255;
    });
  }
  context.putImageData(image, 0, 0);
  return grayCanvas.toDataURL("image/png");
}

/** The answer POST /api/predict would give for these 784 pixels. */
function localAnswer(pixels) {
  const { label, probs, layers } = local.network.run(pixels);
  const pictured = layers.filter((l) => l.shape.length === 3 && l.shape[1] * l.shape[2] > 1);
  return {
    label, confidence: probs[label], probs, input: grayUrl(pixels, 1, 28, 28, false),
    layers: pictured.map(({ name, shape: [count, h, w], data }) => ({
      name, count, strip: grayUrl(data, count, w, h, true),
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
  canvas.setAttribute("aria-label", "Drawing area: draw one digit with the mouse, a pen or " +
                      "a finger, or drop a photo here");
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
$("pad").style.aspectRatio = String(ASPECT);
$("pad").classList.toggle("single", LOCAL);
new ResizeObserver(fitCanvas).observe(canvas);
fitCanvas();
redraw();
buildBars();
showEmpty();
loadModel();

// The third engine: LeNet-5's forward pass in plain JavaScript, and the preprocessing that
// turns a drawing into the 28x28 image MNIST would have made of it.
//
// What to compute comes from model.json's list of layers (written by lenet5.site from the
// architecture), the weights from the model's own model.safetensors: a new variant built
// from these layer kinds and activations needs no change here. One classic script, no build
// step, no dependencies; it defines globalThis.LeNet5Engine. Activations are Float64Arrays
// laid out (C, H, W) row-major, as the Python engines' (N, C, H, W) arrays without N.
"use strict";

(function (root) {
  // --- model.safetensors: an 8-byte little-endian header length, a JSON header, raw data --

  const LITTLE_ENDIAN = new Uint8Array(new Uint16Array([1]).buffer)[0] === 1;
  const count = (shape) => shape.reduce((a, b) => a * b, 1);

  function float32s(buffer, offset, length) {
    if (LITTLE_ENDIAN && offset % 4 === 0) return new Float32Array(buffer, offset, length);
    const view = new DataView(buffer, offset, 4 * length);  // unaligned, or a big-endian host
    return Float32Array.from({ length }, (_, i) => view.getFloat32(4 * i, true));
  }

  /** ArrayBuffer -> {metadata: {key: string}, tensors: {name: {shape, data: Float32Array}}};
   *  the arrays are views of the buffer (no copy). Throws on anything but float32 tensors. */
  function readSafetensors(buffer) {
    const bad = (why) => new Error(`model.safetensors is not a valid safetensors file: ${why}`);
    if (buffer.byteLength < 8) throw bad("it is shorter than 8 bytes");
    const headerLength = Number(new DataView(buffer).getBigUint64(0, true));
    if (8 + headerLength > buffer.byteLength) throw bad("its header runs past the end");
    let header;
    try {
      header = JSON.parse(new TextDecoder().decode(new Uint8Array(buffer, 8, headerLength)));
    } catch (error) {
      throw bad(`its header is not JSON (${error.message})`);
    }
    const start = 8 + headerLength;
    const tensors = {};
    for (const [name, info] of Object.entries(header)) {
      if (name === "__metadata__") continue;
      if (info.dtype !== "F32") throw bad(`${name} is ${info.dtype}; only F32 is read`);
      const [begin, end] = info.data_offsets;
      const length = count(info.shape);
      if (end - begin !== 4 * length || start + end > buffer.byteLength) {
        throw bad(`${name}'s data does not match its shape or runs past the end`);
      }
      tensors[name] = { shape: info.shape, data: float32s(buffer, start + begin, length) };
    }
    return { metadata: header.__metadata__ || {}, tensors };
  }

  // --- activations, in place ---------------------------------------------------------------

  const ACTIVATIONS = {
    none: () => {},
    relu: (x) => { for (let i = 0; i < x.length; i++) if (x[i] < 0) x[i] = 0; },
    tanh: (x) => { for (let i = 0; i < x.length; i++) x[i] = Math.tanh(x[i]); },
    sigmoid: (x) => { for (let i = 0; i < x.length; i++) x[i] = 1 / (1 + Math.exp(-x[i])); },
    // f(a) = 1.7159 tanh(2a/3), LeCun et al. 1998, section II-A
    scaled_tanh: (x) => {
      for (let i = 0; i < x.length; i++) x[i] = 1.7159 * Math.tanh((2 / 3) * x[i]);
    },
  };

  // --- layer kinds ---------------------------------------------------------------------------
  // Each kind: output(layer, inShape) -> outShape; params(layer, inShape) -> the shapes of the
  // tensors "<name>.<key>" it reads; run(layer, params, x, inShape, outShape) -> Float64Array.

  /** Non-overlapping size x size blocks of each map: finish(channel, sum, max) per block. */
  function blocks(x, [c, h, w], [, oh, ow], size, finish) {
    const out = new Float64Array(c * oh * ow);
    let i = 0;
    for (let m = 0; m < c; m++) {
      for (let y = 0; y < oh; y++) {
        for (let col = 0; col < ow; col++, i++) {
          let sum = 0, max = -Infinity;
          for (let dy = 0; dy < size; dy++) {
            const row = (m * h + y * size + dy) * w + col * size;
            for (let dx = 0; dx < size; dx++) {
              const v = x[row + dx];
              sum += v;
              if (v > max) max = v;
            }
          }
          out[i] = finish(m, sum, max);
        }
      }
    }
    return out;
  }

  const pooled = ({ size }, [c, h, w]) => [c, Math.floor(h / size), Math.floor(w / size)];

  const KINDS = {
    // valid convolution, stride 1; table[o][i] false: input map i does not feed output map o
    conv: {
      output: (l, [, h, w]) => [l.out_channels, h - l.kernel + 1, w - l.kernel + 1],
      params: (l, [c]) => ({ weight: [l.out_channels, c, l.kernel, l.kernel],
                             bias: [l.out_channels] }),
      run(l, p, x, [c, h, w], [o, oh, ow]) {
        const k = l.kernel, plane = oh * ow, out = new Float64Array(o * plane);
        for (let m = 0; m < o; m++) {
          const acc = out.subarray(m * plane, (m + 1) * plane).fill(p.bias[m]);
          for (let n = 0; n < c; n++) {
            if (l.table && !l.table[m][n]) continue;
            for (let ky = 0; ky < k; ky++) {
              for (let kx = 0; kx < k; kx++) {
                const weight = p.weight[((m * c + n) * k + ky) * k + kx];
                for (let y = 0; y < oh; y++) {
                  const src = (n * h + y + ky) * w + kx, dst = y * ow;
                  for (let col = 0; col < ow; col++) acc[dst + col] += weight * x[src + col];
                }
              }
            }
          }
        }
        return out;
      },
    },
    maxpool: {
      output: pooled, params: () => ({}),
      run: (l, p, x, inShape, outShape) => blocks(x, inShape, outShape, l.size,
                                                  (m, sum, max) => max),
    },
    avgpool: {
      output: pooled, params: () => ({}),
      run: (l, p, x, inShape, outShape) => blocks(x, inShape, outShape, l.size,
                                                  (m, sum) => sum / (l.size * l.size)),
    },
    // the 1998 trainable subsampling: each block's sum times weight[c], plus bias[c]
    subsample: {
      output: pooled,
      params: (l, [c]) => ({ weight: [c], bias: [c] }),
      run: (l, p, x, inShape, outShape) => blocks(x, inShape, outShape, l.size,
                                                  (m, sum) => sum * p.weight[m] + p.bias[m]),
    },
    // fully connected, the input flattened in (C, H, W) order
    dense: {
      output: (l) => [l.out_features],
      params: (l, inShape) => ({ weight: [l.out_features, count(inShape)],
                                 bias: [l.out_features] }),
      run(l, p, x) {
        const n = x.length, out = new Float64Array(l.out_features);
        for (let o = 0; o < out.length; o++) {
          let sum = p.bias[o];
          const row = o * n;
          for (let i = 0; i < n; i++) sum += p.weight[row + i] * x[i];
          out[o] = sum;
        }
        return out;
      },
    },
    // Euclidean RBF output: the NEGATED squared distances to fixed centres (K rows of F)
    rbf: {
      output: (l) => [l.centres.length],
      params: () => ({}),
      run(l, p, x) {
        const out = new Float64Array(l.centres.length);
        l.centres.forEach((centre, k) => {
          let sum = 0;
          for (let i = 0; i < x.length; i++) sum += (x[i] - centre[i]) ** 2;
          out[k] = -sum;
        });
        return out;
      },
    },
  };

  /** Class probabilities from the network's outputs (softmax, as lenet5.model.probabilities). */
  function softmax(logits) {
    const top = Math.max(...logits);
    const exps = Array.from(logits, (v) => Math.exp(v - top));
    const total = exps.reduce((a, b) => a + b, 0);
    return exps.map((e) => e / total);
  }

  class Network {
    /** description: model.json ({input: {size, pad, mean, std}, layers: [...]});
     *  tensors: readSafetensors(...).tensors. Throws if a layer or tensor does not fit. */
    constructor(description, tensors) {
      this.input = description.input;
      this.side = description.input.size - 2 * description.input.pad;  // 28
      let shape = [1, description.input.size, description.input.size];
      this.layers = description.layers.map((spec) => {
        const kind = KINDS[spec.kind];
        const activation = ACTIVATIONS[spec.activation || "none"];
        const where = `model.json: layer ${spec.name}`;
        if (!kind) throw new Error(`${where} is of unknown kind ${spec.kind}`);
        if (!activation) throw new Error(`${where} has unknown activation ${spec.activation}`);
        if (spec.kind === "rbf" && spec.centres.some((c) => c.length !== count(shape))) {
          throw new Error(`${where}: its centres do not have ${count(shape)} values`);
        }
        const params = {};
        for (const [key, expected] of Object.entries(kind.params(spec, shape))) {
          const tensor = tensors[`${spec.name}.${key}`];
          const found = tensor ? tensor.shape.join("x") : "none";
          if (found !== expected.join("x")) {
            throw new Error(`model.safetensors: ${spec.name}.${key} should be ` +
                            `${expected.join("x")}, found ${found}`);
          }
          params[key] = tensor.data;
        }
        const layer = { spec, kind, activation, params, inShape: shape,
                        outShape: kind.output(spec, shape) };
        shape = layer.outShape;
        return layer;
      });
    }

    /** 784 pixels (28x28 row-major, 0-255, ink bright) -> the padded, normalised input. */
    inputFrom(pixels) {
      const side = this.side, { size, pad, mean, std } = this.input;
      if (!pixels || pixels.length !== side * side) {
        throw new TypeError(`classify needs ${side * side} pixel values (a ${side}x${side} ` +
                            `image, row-major, 0-255, ink bright), got ${pixels && pixels.length}`);
      }
      // one mean for every pixel, or a mean image (size x size, the padding's at 0)
      const meanAt = Array.isArray(mean) ? (r, c) => mean[r][c] : () => mean;
      const x = new Float64Array(size * size);
      for (let r = 0; r < size; r++) {
        for (let c = 0; c < size; c++) {
          const inside = r >= pad && r < pad + side && c >= pad && c < pad + side;
          const value = inside ? pixels[(r - pad) * side + c - pad] / 255 : 0;  // pad: background
          x[r * size + c] = (value - meanAt(r, c)) / std;
        }
      }
      return x;
    }

    /** Every layer's output: [{name, shape, data}], the last one the logits. */
    forward(pixels) {
      let x = this.inputFrom(pixels);
      return this.layers.map(({ spec, kind, activation, params, inShape, outShape }) => {
        x = kind.run(spec, params, x, inShape, outShape);
        activation(x);
        return { name: spec.name, shape: outShape, data: x };
      });
    }

    /** {label, probs, layers}: the most probable class, the probabilities, every output. */
    run(pixels) {
      const layers = this.forward(pixels);
      const probs = softmax(layers[layers.length - 1].data);
      return { label: probs.indexOf(Math.max(...probs)), probs, layers };
    }

    classify(pixels) {
      const { label, probs } = this.run(pixels);
      return { label, probs };
    }

    /** Per layer: name, kind, output shape, trainable parameters (a conv table's unconnected
     *  weights are stored but not counted), window and activation. */
    summary() {
      return this.layers.map(({ spec, params, outShape }) => ({
        name: spec.name, kind: spec.kind, output: outShape,
        params: Object.values(params).reduce((n, p) => n + p.length, 0) -
          (spec.table ? spec.table.flat().filter((on) => !on).length * spec.kernel ** 2 : 0),
        window: spec.kernel || spec.size || null,
        activation: spec.activation === "none" ? null : spec.activation,
      }));
    }
  }

  // --- preprocessing: a drawing or a clean photo -> MNIST's 28x28 --------------------------
  // The recipe of lenet5.images.preprocess_image for clean images, step by step and with its
  // constants: grey, shrink, polarity, ink ramped from the paper to its 90th percentile, the
  // box of pixels of at least 0.15, the longer side scaled to 20 px (antialiased), pasted
  // into 28x28 with the centre of mass on pixel (14, 14). What it leaves out is for photos:
  // the paper model for uneven light and the choice of the digit's blobs among specks.

  const WORK_SIDE = 256, MODEL_SIDE = 128, MIN_DIGIT_SIDE = 40;
  const NOISE_SIGMAS = 4, INK_PERCENTILE = 90, LO_FRACTION = 0.05, MIN_CONTRAST = 0.06;
  const MIN_SNR = 8, BOX_LEVEL = 0.15, BOX_SIDE = 20, FIELD = 28, CENTRE = 14;

  /** Python's round() and numpy's rint: halves go to the even neighbour. */
  function roundHalfEven(v) {
    const r = Math.round(v);
    return Math.abs(v % 1) === 0.5 && r % 2 !== 0 ? r - 1 : r;
  }

  // Pillow's resampling filters (support, weight), as Image.resize applies them
  const BOX = [0.5, (t) => (t > -0.5 && t <= 0.5 ? 1 : 0)];
  const BILINEAR = [1, (t) => Math.max(0, 1 - Math.abs(t))];

  /** Pillow's resampling coefficients: for each output index, [first input, weights]. */
  function coefficients(inSize, outSize, [support, filter]) {
    const scale = inSize / outSize, widen = Math.max(scale, 1), reach = support * widen;
    return Array.from({ length: outSize }, (_, i) => {
      const centre = (i + 0.5) * scale;
      const first = Math.max(Math.trunc(centre - reach + 0.5), 0);
      const last = Math.min(Math.trunc(centre + reach + 0.5), inSize);
      const weights = Array.from({ length: last - first },
                                 (_, j) => filter((j + first - centre + 0.5) / widen));
      const total = weights.reduce((a, b) => a + b, 0);
      return [first, weights.map((v) => (total ? v / total : 0))];
    });
  }

  /** A grey image {width, height, data} resized to (rows, cols), rows first then columns. */
  function resize(image, rows, cols, filter) {
    const { width, height, data } = image;
    const across = coefficients(width, cols, filter);
    const wide = new Float64Array(height * cols);
    for (let y = 0; y < height; y++) {
      across.forEach(([first, weights], x) => {
        let sum = 0;
        for (let j = 0; j < weights.length; j++) sum += weights[j] * data[y * width + first + j];
        wide[y * cols + x] = sum;
      });
    }
    const out = new Float64Array(rows * cols);
    coefficients(height, rows, filter).forEach(([first, weights], y) => {
      for (let x = 0; x < cols; x++) {
        let sum = 0;
        for (let j = 0; j < weights.length; j++) sum += weights[j] * wide[(first + j) * cols + x];
        out[y * cols + x] = sum;
      }
    });
    return { width: cols, height: rows, data: out };
  }

  /** (rows, cols) with the longer side scaled down to `side` (never up), aspect kept. */
  function fit(height, width, side) {
    const scale = Math.min(1, side / Math.max(height, width));
    return [Math.max(1, roundHalfEven(height * scale)), Math.max(1, roundHalfEven(width * scale))];
  }

  function shrink(image, side) {
    const [rows, cols] = fit(image.height, image.width, side);
    return rows === image.height && cols === image.width ? image
      : resize(image, rows, cols, BOX);
  }

  /** Grey in [0, 1] from RGBA ImageData: luma with Pillow's weights, transparency on white. */
  function grey({ width, height, data }) {
    const out = new Float64Array(width * height);
    for (let i = 0; i < out.length; i++) {
      const alpha = data[4 * i + 3] / 255;
      const luma = (0.299 * data[4 * i] + 0.587 * data[4 * i + 1] + 0.114 * data[4 * i + 2]) / 255;
      out[i] = luma * alpha + (1 - alpha);
    }
    return { width, height, data: out };
  }

  /** numpy.percentile (linear interpolation) of sorted values. */
  function percentile(sorted, q) {
    const at = (q / 100) * (sorted.length - 1), low = Math.floor(at);
    const high = Math.min(low + 1, sorted.length - 1);
    return sorted[low] + (sorted[high] - sorted[low]) * (at - low);
  }

  /** Every k-th row and column's pixels, about 4k of them, sorted: robust statistics, cheap. */
  function sample({ width, height, data }) {
    const step = Math.ceil(Math.sqrt(data.length / 4096)), values = [];
    for (let y = 0; y < height; y += step) {
      for (let x = 0; x < width; x += step) values.push(data[y * width + x]);
    }
    return Float64Array.from(values).sort();
  }

  /** The paper level of a grey image of bright ink (the median of its histogram's modal
   *  bin, as the median lands in the ink once strokes cover half a tight crop) and the
   *  noise below it (a one-sided MAD, so the ink does not inflate it). */
  function spread(image) {
    const values = sample(image);
    const binWidth = Math.max(values[values.length - 1] - values[0], 1e-9) / 128;
    const bins = values.map((v) => Math.trunc((v - values[0]) / binWidth));
    const counts = new Int32Array(130);
    bins.forEach((b) => counts[b]++);
    const peak = counts.indexOf(Math.max(...counts));
    const first = bins.findIndex((b) => b >= peak);
    const stop = bins.findIndex((b) => b > peak);
    const paper = values[Math.trunc((first + (stop < 0 ? bins.length : stop) - 1) / 2)];
    const below = values.findIndex((v) => v > paper);  // values[:below] <= paper
    const noise = paper - values[Math.trunc(((below < 0 ? values.length : below) - 1) / 2)];
    return [paper, 1.4826 * noise];
  }

  /** The digit's ink in [0, 1], cropped to its box, in a grey image of bright ink; null when
   *  nothing stands out from the paper. */
  function findInk(image) {
    const { width, height, data } = image;
    const [paper, sigma] = spread(image);
    const floor = paper + Math.max(NOISE_SIGMAS * sigma, 2 / 255);
    const inked = data.filter((v) => v > floor).sort();
    if (inked.length === 0) return null;
    const level = percentile(inked, INK_PERCENTILE);
    const contrast = level - paper;
    if (contrast < MIN_CONTRAST || contrast < MIN_SNR * sigma) return null;
    const low = paper + Math.max(NOISE_SIGMAS * sigma, LO_FRACTION * contrast);
    const ink = data.map((v) => Math.min(1, Math.max(0, (v - low) / (level - low))));
    let top = height, bottom = -1, left = width, right = -1;
    for (let y = 0; y < height; y++) {
      for (let x = 0; x < width; x++) {
        if (ink[y * width + x] >= BOX_LEVEL) {
          top = Math.min(top, y);
          bottom = Math.max(bottom, y);
          left = Math.min(left, x);
          right = Math.max(right, x);
        }
      }
    }
    if (bottom < 0) return null;
    const w = right - left + 1, h = bottom - top + 1, out = new Float64Array(w * h);
    for (let y = 0; y < h; y++) {
      const from = (top + y) * width + left;
      out.set(ink.subarray(from, from + w), y * w);
    }
    return { width: w, height: h, data: out };
  }

  /** Cropped ink -> 784 pixels (Uint8Array): longer side 20 px, centre of mass at (14, 14). */
  function toMnist(ink) {
    const scale = BOX_SIDE / Math.max(ink.width, ink.height);
    const rows = Math.max(1, roundHalfEven(ink.height * scale));
    const cols = Math.max(1, roundHalfEven(ink.width * scale));
    const digit = resize(ink, rows, cols, BILINEAR).data.map((v) => Math.min(1, Math.max(0, v)));
    const top = Math.max(...digit);
    let mass = 0, rowMoment = 0, colMoment = 0;
    digit.forEach((v, i) => {
      mass += v;
      rowMoment += v * Math.floor(i / cols);
      colMoment += v * (i % cols);
    });
    const clamp = (v, high) => Math.min(Math.max(v, 0), high);
    const row0 = clamp(roundHalfEven(CENTRE - rowMoment / mass), FIELD - rows);
    const col0 = clamp(roundHalfEven(CENTRE - colMoment / mass), FIELD - cols);
    const pixels = new Uint8Array(FIELD * FIELD);
    digit.forEach((v, i) => {
      const at = (row0 + Math.floor(i / cols)) * FIELD + col0 + (i % cols);
      pixels[at] = roundHalfEven((v / top) * 255);
    });
    return pixels;
  }

  /** RGBA ImageData (a canvas drawing or a clean photo, dark ink on light paper or light on
   *  dark) -> 784 pixels, 28x28 row-major, 0-255, ink bright; null when it holds no ink. */
  function preprocess(imageData) {
    let image = shrink(grey(imageData), WORK_SIDE);
    let coarse = shrink(image, MODEL_SIDE);
    const values = sample(coarse);
    const mean = values.reduce((a, b) => a + b, 0) / values.length;
    if (mean < percentile(values, 50)) {  // more ink below the paper's grey than above it
      const invert = (img) => ({ ...img, data: img.data.map((v) => 1 - v) });
      const same = coarse === image;
      image = invert(image);
      coarse = same ? image : invert(coarse);
    }
    let ink = findInk(coarse);
    if (ink && Math.max(ink.width, ink.height) < MIN_DIGIT_SIDE && coarse.width !== image.width) {
      ink = findInk(image);  // a small digit: look again, closer
    }
    return ink && toMnist(ink);
  }

  root.LeNet5Engine = { readSafetensors, Network, softmax, preprocess, ACTIVATIONS, KINDS };
})(globalThis);

// backpack.js: a Backpack language model in the browser (chapter 9, last section).
// The same model as chapters 2 to 5 and the same caches as chapter 10, written out in
// plain JavaScript, with no library: the tokenizer (chapter 1), the sense network
// (chapter 2), the weight network with its key/value cache (chapters 4 and 10), the
// weighted sum of senses and the tied output (chapter 5), the contributions
// (chapter 8) and the interventions (chapter 9). A classic script (not a module), so
// that the page also works when opened from disk; everything is in window.Backpack.
(function (global) {
  "use strict";

  // ---- 1. The bundle: script files that hand their payload to receive()
  // [bundle]
  const received = {}; // kind -> payload, filled as the bundle's scripts run

  function receive(kind, payload) {
    received[kind] = payload;
  }

  function loadScript(url) {
    return new Promise(function (resolve, reject) {
      const script = document.createElement("script");
      script.src = url;
      script.onload = function () {
        script.remove();
        resolve();
      };
      script.onerror = function () {
        reject(
          new Error(
            "could not load " +
              url +
              ": was the book built (the build " +
              "writes _static/backpack-web)?",
          ),
        );
      };
      document.head.appendChild(script);
    });
  }

  function base64Bytes(text) {
    const raw = atob(text),
      bytes = new Uint8Array(raw.length);
    for (let i = 0; i < raw.length; i++) bytes[i] = raw.charCodeAt(i);
    return bytes;
  }

  // float16 (IEEE half) bit patterns -> float32 values, through a table of all 65,536
  function halfTable() {
    const table = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) {
      const sign = h & 0x8000 ? -1 : 1,
        exp = (h >> 10) & 0x1f,
        frac = h & 0x3ff;
      if (exp === 0)
        table[h] = sign * frac * Math.pow(2, -24); // subnormal
      else if (exp === 31) table[h] = frac ? NaN : sign * Infinity;
      else table[h] = sign * (1 + frac / 1024) * Math.pow(2, exp - 15);
    }
    return table;
  }

  // Load manifest, tokenizer, tables and the weights' chunks, one script at a time;
  // onProgress(bytesDone, bytesTotal) after each.
  // Resolves to {model, tokenizer, extras}.
  async function loadBundle(baseUrl, onProgress) {
    await loadScript(baseUrl + "/manifest.js");
    const manifest = received.manifest,
      files = manifest.files;
    const total = files.reduce(function (s, f) {
      return s + f.bytes;
    }, 0);
    let done = 0;
    const chunks = [];
    for (const file of files) {
      await loadScript(baseUrl + "/" + file.name);
      if (file.kind === "weights") chunks.push(base64Bytes(received.weights));
      received.weights = null; // the base64 text can go: its bytes are kept
      done += file.bytes;
      if (onProgress) onProgress(done, total);
    }
    const weights = new Uint16Array(manifest.weight_count);
    let offset = 0; // bytes are little-endian float16, split over the chunks
    for (const bytes of chunks) {
      weights.set(new Uint16Array(bytes.buffer, 0, bytes.length / 2), offset);
      offset += bytes.length / 2;
    }
    const half = halfTable(),
      tensors = {};
    for (const t of manifest.tensors) {
      const size = t.shape.reduce(function (a, b) {
        return a * b;
      }, 1);
      const values = new Float32Array(size);
      for (let i = 0; i < size; i++) values[i] = half[weights[t.offset + i]];
      tensors[t.name] = values;
    }
    const tokenizer = new Tokenizer(received.tokenizer);
    const model = new BackpackModel(manifest.config, tensors);
    return { model: model, tokenizer: tokenizer, extras: received.extras };
  }
  // [/bundle]

  // ---- 2. The tokenizer: byte-level BPE (chapter 1)
  // [tokenizer]
  // GPT-2's map from the 256 bytes to printable characters: bytes that print stay
  // themselves, the others move to 256 and up
  function byteToCharTable() {
    const keep = [];
    for (let b = 33; b <= 126; b++) keep.push(b);
    for (let b = 161; b <= 172; b++) keep.push(b);
    for (let b = 174; b <= 255; b++) keep.push(b);
    const table = new Array(256);
    let next = 256;
    for (let b = 0; b < 256; b++) {
      table[b] = String.fromCharCode(keep.includes(b) ? b : next++);
    }
    return table;
  }

  // the pre-tokenizer's pattern; \s spelled out as Unicode's White_Space (the Rust
  // tokenizer's \s), which differs from JavaScript's \s at U+0085 and U+FEFF
  const WS =
    "\\t\\n\\v\\f\\r \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f" +
    "\\u205f\\u3000";
  const PIECES = new RegExp(
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" +
      WS +
      "\\p{L}\\p{N}]+" +
      "|[" +
      WS +
      "]+(?![^" +
      WS +
      "])|[" +
      WS +
      "]+",
    "gu",
  );

  class Tokenizer {
    // tables: {vocab: [token text by id], merges: ["a b" by rank], special: {text: id}}
    constructor(tables) {
      this.vocab = tables.vocab;
      this.ids = new Map(
        tables.vocab.map(function (t, i) {
          return [t, i];
        }),
      );
      this.ranks = new Map(
        tables.merges.map(function (m, i) {
          return [m, i];
        }),
      );
      this.special = tables.special;
      this.byteChar = byteToCharTable();
      this.charByte = new Map(
        this.byteChar.map(function (c, b) {
          return [c, b];
        }),
      );
      this.cache = new Map(); // piece -> ids
    }

    // merge the adjacent pair of lowest rank, again and again (leftmost first on ties)
    bpe(symbols) {
      while (symbols.length > 1) {
        let best = -1,
          bestRank = Infinity;
        for (let i = 0; i + 1 < symbols.length; i++) {
          const rank = this.ranks.get(symbols[i] + " " + symbols[i + 1]);
          if (rank !== undefined && rank < bestRank) {
            bestRank = rank;
            best = i;
          }
        }
        if (best < 0) break;
        symbols.splice(best, 2, symbols[best] + symbols[best + 1]);
      }
      return symbols;
    }

    encodePiece(piece) {
      let ids = this.cache.get(piece);
      if (ids === undefined) {
        const bytes = new TextEncoder().encode(piece);
        const symbols = Array.from(bytes, (b) => this.byteChar[b]);
        ids = this.bpe(symbols).map((s) => this.ids.get(s));
        this.cache.set(piece, ids);
      }
      return ids;
    }

    // text -> token ids, as the Python tokenizer encodes it
    encode(text) {
      const out = [];
      const names = Object.keys(this.special);
      let rest = text;
      while (rest.length) {
        // special tokens are cut out first, then the pieces
        let at = -1,
          name = null;
        for (const s of names) {
          const i = rest.indexOf(s);
          if (i >= 0 && (at < 0 || i < at)) {
            at = i;
            name = s;
          }
        }
        const plain = at < 0 ? rest : rest.slice(0, at);
        for (const match of plain.matchAll(PIECES)) {
          for (const id of this.encodePiece(match[0])) out.push(id);
        }
        if (at < 0) break;
        out.push(this.special[name]);
        rest = rest.slice(at + name.length);
      }
      return out;
    }

    // token ids -> text (bytes that are not valid UTF-8 become U+FFFD)
    decode(ids) {
      const bytes = [];
      let text = "";
      const flush = () => {
        text += new TextDecoder().decode(new Uint8Array(bytes));
        bytes.length = 0;
      };
      for (const id of ids) {
        const token = this.vocab[id];
        if (Object.values(this.special).includes(id)) {
          flush();
          text += token;
          continue;
        }
        for (const c of token) bytes.push(this.charByte.get(c));
      }
      flush();
      return text;
    }
  }
  // [/tokenizer]

  // ---- 3. The arithmetic: float32 storage, float64 sums
  // [math]
  // out (n_out) = W (n_out, n_in) x (n_in) + b: PyTorch's Linear, weight rows in order
  function linear(W, b, x, nOut, nIn, out) {
    out = out || new Float32Array(nOut);
    for (let o = 0; o < nOut; o++) {
      let s = b ? b[o] : 0;
      const row = o * nIn;
      for (let i = 0; i < nIn; i++) s += W[row + i] * x[i];
      out[o] = s;
    }
    return out;
  }

  function layerNorm(x, w, b, eps) {
    const n = x.length,
      out = new Float32Array(n);
    let mean = 0,
      variance = 0;
    for (let i = 0; i < n; i++) mean += x[i];
    mean /= n;
    for (let i = 0; i < n; i++) variance += (x[i] - mean) * (x[i] - mean);
    const inv = 1 / Math.sqrt(variance / n + eps);
    for (let i = 0; i < n; i++) out[i] = (x[i] - mean) * inv * w[i] + b[i];
    return out;
  }

  // GPT-2's gelu, the tanh approximation, in place
  function gelu(x) {
    const c = Math.sqrt(2 / Math.PI);
    for (let i = 0; i < x.length; i++) {
      const v = x[i];
      x[i] = 0.5 * v * (1 + Math.tanh(c * (v + 0.044715 * v * v * v)));
    }
    return x;
  }

  // softmax of scores[0..n) in place
  function softmax(scores, n) {
    let max = -Infinity,
      sum = 0;
    for (let j = 0; j < n; j++) max = Math.max(max, scores[j]);
    for (let j = 0; j < n; j++) {
      scores[j] = Math.exp(scores[j] - max);
      sum += scores[j];
    }
    for (let j = 0; j < n; j++) scores[j] /= sum;
    return scores;
  }

  function dot(a, aStart, b, bStart, n) {
    let s = 0;
    for (let i = 0; i < n; i++) s += a[aStart + i] * b[bStart + i];
    return s;
  }
  // [/math]

  // ---- 4. The model (chapter 5)
  // [model]
  class BackpackModel {
    constructor(config, tensors) {
      this.config = config;
      this.t = tensors; // PyTorch's names: "transformer.h.0.attn.c_attn.weight", ...
      this.d = config.n_embd;
      this.k = config.num_senses;
      this.vocab = config.vocab_size;
      this.E = tensors["transformer.wte.weight"]; // (vocab, d): input, senses, output
      this.senseCache = new Map(); // token id -> its k senses, (k, d)
    }

    row(id) {
      return this.E.subarray(id * this.d, (id + 1) * this.d);
    }

    mlp(prefix, x, nIn, nHidden, nOut) {
      const t = this.t;
      const h = gelu(
        linear(t[prefix + ".c_fc.weight"], t[prefix + ".c_fc.bias"], x, nHidden, nIn),
      );
      return linear(
        t[prefix + ".c_proj.weight"],
        t[prefix + ".c_proj.bias"],
        h,
        nOut,
        nHidden,
      );
    }

    ln(prefix, x) {
      return layerNorm(
        x,
        this.t[prefix + ".weight"],
        this.t[prefix + ".bias"],
        this.config.layer_norm_epsilon,
      );
    }

    // Chapter 2: the k senses of one token, (k, d) row-major; computed once per id
    senses(id) {
      let senses = this.senseCache.get(id);
      if (senses) return senses;
      const d = this.d,
        s = "sense_network.";
      const r0 = this.row(id);
      const r1 = this.ln(s + "ln", r0); // h0 = LN_a(r0)
      for (let i = 0; i < d; i++) r1[i] += r0[i]; // r1 = h0 + r0
      const m = this.mlp(s + "block.mlp", this.ln(s + "block.ln_1", r1), d, 4 * d, d);
      for (let i = 0; i < d; i++) r1[i] += m[i]; // r2 = r1 + MLP(LN_b(r1))
      const h2 = this.ln(s + "block.ln_2", r1); // LN_c(r2)
      const scale = this.config.sense_intermediate_scale;
      senses = this.mlp(s + "final_mlp", h2, d, scale * d, this.k * d); // (k, d)
      this.senseCache.set(id, senses);
      return senses;
    }

    // A new sequence: its caches, preallocated for the whole context
    start() {
      const n = this.config.n_positions,
        d = this.d;
      const layers = [];
      for (let l = 0; l < this.config.n_layer; l++) {
        layers.push({ keys: new Float32Array(n * d), values: new Float32Array(n * d) });
      }
      return {
        ids: [],
        layers: layers,
        senseKeys: new Float32Array(n * d),
        alpha: null,
      };
    }

    // Chapter 4 with chapter 10's cache: the hidden state of token id at the next
    // position, its keys and values appended to the cache
    weightNetworkStep(cache, id) {
      const t = this.t,
        d = this.d,
        pos = cache.ids.length;
      const nHead = this.config.n_head,
        hd = d / nHead;
      if (pos >= this.config.n_positions) {
        throw new Error("the context holds " + this.config.n_positions + " tokens");
      }
      const x = new Float32Array(d),
        wpe = t["transformer.wpe.weight"];
      const e = this.row(id);
      for (let i = 0; i < d; i++) x[i] = e[i] + wpe[pos * d + i];
      const scores = new Float64Array(pos + 1);
      for (let l = 0; l < this.config.n_layer; l++) {
        const p = "transformer.h." + l,
          layer = cache.layers[l];
        const qkv = linear(
          t[p + ".attn.c_attn.weight"],
          t[p + ".attn.c_attn.bias"],
          this.ln(p + ".ln_1", x),
          3 * d,
          d,
        );
        layer.keys.set(qkv.subarray(d, 2 * d), pos * d);
        layer.values.set(qkv.subarray(2 * d, 3 * d), pos * d);
        const scale =
          1 /
          (Math.sqrt(hd) * (this.config.scale_attn_by_inverse_layer_idx ? l + 1 : 1));
        const y = new Float32Array(d);
        for (let h = 0; h < nHead; h++) {
          // one head: softmax(q k^T * scale) v
          for (let j = 0; j <= pos; j++) {
            scores[j] = dot(qkv, h * hd, layer.keys, j * d + h * hd, hd) * scale;
          }
          softmax(scores, pos + 1);
          for (let j = 0; j <= pos; j++) {
            for (let i = 0; i < hd; i++) {
              y[h * hd + i] += scores[j] * layer.values[j * d + h * hd + i];
            }
          }
        }
        const a = linear(
          t[p + ".attn.c_proj.weight"],
          t[p + ".attn.c_proj.bias"],
          y,
          d,
          d,
        );
        for (let i = 0; i < d; i++) x[i] += a[i];
        const m = this.mlp(p + ".mlp", this.ln(p + ".ln_2", x), d, 4 * d, d);
        for (let i = 0; i < d; i++) x[i] += m[i];
      }
      return this.ln("transformer.ln_f", x);
    }

    // Append token id; returns alpha of the new position, (k, n): how much sense l of
    // the token at j contributes (chapter 4's SenseWeightNetwork, one query row)
    push(cache, id) {
      const d = this.d,
        k = this.k,
        hk = d / k,
        pos = cache.ids.length;
      const hidden = this.weightNetworkStep(cache, id);
      const w = "sense_weight_net.c_attn.";
      const qk = linear(this.t[w + "weight"], this.t[w + "bias"], hidden, 2 * d, d);
      // the sense keys: (k, d/k) per position
      cache.senseKeys.set(qk.subarray(d, 2 * d), pos * d);
      cache.ids.push(id);
      this.senses(id); // into the sense cache
      const n = pos + 1,
        alpha = new Float64Array(k * n),
        scale = 1 / Math.sqrt(hk);
      const scores = new Float64Array(n);
      for (let l = 0; l < k; l++) {
        for (let j = 0; j < n; j++) {
          scores[j] = dot(qk, l * hk, cache.senseKeys, j * d + l * hk, hk) * scale;
        }
        softmax(scores, n);
        alpha.set(scores.subarray(0, n), l * n);
      }
      cache.alpha = alpha;
      return alpha;
    }

    // The senses of every position of the cache, after the edits: n arrays (k, d)
    sequenceSenses(cache, edits) {
      let senses = cache.ids.map((id) => this.senses(id));
      for (const edit of edits || []) senses = edit(cache.ids, senses);
      return senses;
    }

    // Chapter 5: o = sum_j sum_l alpha_lj C(x_j)_l at the last position, (d,)
    output(cache, edits) {
      const d = this.d,
        k = this.k,
        n = cache.ids.length,
        alpha = cache.alpha;
      const senses = this.sequenceSenses(cache, edits),
        o = new Float64Array(d);
      for (let j = 0; j < n; j++) {
        for (let l = 0; l < k; l++) {
          const a = alpha[l * n + j],
            c = senses[j];
          for (let i = 0; i < d; i++) o[i] += a * c[l * d + i];
        }
      }
      if (this.config.divide_by_senses) for (let i = 0; i < d; i++) o[i] /= k;
      return o;
    }

    // the tied output: logits = E o, (vocab,); rows: only these ids (others left 0)
    logits(cache, edits, rows) {
      const o = this.output(cache, edits),
        d = this.d;
      const out = new Float32Array(this.vocab);
      const ids = rows || null,
        count = ids ? ids.length : this.vocab;
      for (let r = 0; r < count; r++) {
        const v = ids ? ids[r] : r;
        out[v] = dot(this.E, v * d, o, 0, d);
      }
      return out;
    }

    // Chapter 8: what sense l of the token at j adds to the logit of target, (n, k);
    // the terms add up to that logit
    contributions(cache, edits, target) {
      const d = this.d,
        k = this.k,
        n = cache.ids.length,
        alpha = cache.alpha;
      const senses = this.sequenceSenses(cache, edits),
        e = this.row(target);
      const divide = this.config.divide_by_senses ? k : 1,
        terms = [];
      for (let j = 0; j < n; j++) {
        const row = [];
        for (let l = 0; l < k; l++) {
          row.push((alpha[l * n + j] * dot(senses[j], l * d, e, 0, d)) / divide);
        }
        terms.push(row);
      }
      return terms;
    }

    // the top words of each sense of token id: k rows of [id, logit] pairs
    senseTopWords(id, top) {
      const d = this.d,
        senses = this.senses(id),
        rows = [];
      for (let l = 0; l < this.k; l++) {
        const scores = new Float32Array(this.vocab);
        for (let v = 0; v < this.vocab; v++)
          scores[v] = dot(this.E, v * d, senses, l * d, d);
        rows.push(topIds(scores, top).map((v) => [v, scores[v]]));
      }
      return rows;
    }
  }
  // [/model]

  // ---- 5. Generation
  // [generation]
  function topIds(scores, top) {
    const best = []; // the top ids, largest score first
    for (let v = 0; v < scores.length; v++) {
      if (best.length < top || scores[v] > scores[best[best.length - 1]]) {
        let i = best.length < top ? best.length : top - 1;
        while (i > 0 && scores[best[i - 1]] < scores[v]) {
          best[i] = best[i - 1];
          i--;
        }
        best[i] = v;
      }
    }
    return best;
  }

  // a seeded random number generator (mulberry32): the same seed, the same samples here
  function randomSource(seed) {
    let a = seed >>> 0;
    return function () {
      a = (a + 0x6d2b79f5) >>> 0;
      let t = Math.imul(a ^ (a >>> 15), 1 | a);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
  }

  // chapter 5's sample_next_token: greedy at temperature 0, else softmax(logits / T)
  // over the top_k largest (all when topK is 0)
  function sampleNext(logits, temperature, topK, random) {
    if (temperature === 0) return topIds(logits, 1)[0];
    const ids = topK > 0 ? topIds(logits, topK) : Array.from(logits.keys());
    let max = -Infinity;
    for (const v of ids) max = Math.max(max, logits[v] / temperature);
    const p = ids.map((v) => Math.exp(logits[v] / temperature - max));
    let u = random() * p.reduce((a, b) => a + b, 0);
    for (let i = 0; i < ids.length; i++) {
      u -= p[i];
      if (u <= 0) return ids[i];
    }
    return ids[ids.length - 1];
  }

  // Continue prompt ids by `count` tokens; options {temperature, topK, seed, edits,
  // onToken(id, index)}; resolves to the new ids. Yields to the page after every token.
  async function generate(model, promptIds, count, options) {
    const o = options || {},
      cache = model.start(),
      out = [];
    const random = randomSource(o.seed === undefined ? 0 : o.seed);
    if (promptIds.length + count > model.config.n_positions) {
      throw new Error(
        "the prompt (" +
          promptIds.length +
          " tokens) and " +
          count +
          " new tokens exceed the context of " +
          model.config.n_positions,
      );
    }
    for (const id of promptIds) model.push(cache, id);
    for (let i = 0; i < count; i++) {
      const logits = model.logits(cache, o.edits);
      const next = sampleNext(logits, o.temperature || 0, o.topK || 0, random);
      out.push(next);
      if (o.onToken) o.onToken(next, i);
      if (i + 1 < count) model.push(cache, next);
      await new Promise((resolve) => setTimeout(resolve, 0));
    }
    return out;
  }
  // [/generation]

  // ---- 6. Interventions (chapter 9): functions (ids, senses) -> senses
  // [interventions]
  // positions covered by a run of ids (a word of one or more tokens)
  function covered(ids, run) {
    const hit = new Array(ids.length).fill(false);
    for (let s = 0; s + run.length <= ids.length; s++) {
      if (run.every((t, o) => ids[s + o] === t)) {
        for (let o = 0; o < run.length; o++) hit[s + o] = true;
      }
    }
    return hit;
  }

  // reweight: sense `sense` of every occurrence of the runs times weight
  function reweight(model, runs, sense, weight) {
    const d = model.d;
    return function (ids, senses) {
      const hit = new Array(ids.length).fill(false);
      for (const run of runs)
        covered(ids, run).forEach((h, j) => {
          hit[j] = hit[j] || h;
        });
      return senses.map(function (c, j) {
        if (!hit[j]) return c;
        const out = Float32Array.from(c);
        for (let i = 0; i < d; i++) out[sense * d + i] *= weight;
        return out;
      });
    };
  }

  // edit_fact: the senses of `word` lose their share of E[old] to E[new]
  function editFact(model, word, oldId, newId) {
    const d = model.d,
      k = model.k,
      senses = model.senses(word);
    const old = model.row(oldId),
      nu = model.row(newId);
    const oo = dot(old, 0, old, 0, d),
      nn = dot(nu, 0, nu, 0, d);
    const edited = new Float32Array(k * d);
    for (let l = 0; l < k; l++) {
      const c = dot(senses, l * d, old, 0, d) / oo;
      for (let i = 0; i < d; i++) {
        edited[l * d + i] = senses[l * d + i] - c * old[i] + ((c * oo) / nn) * nu[i];
      }
    }
    return function (ids, all) {
      return all.map((c, j) => (ids[j] === word ? edited : c));
    };
  }

  // topic steering: weights beta * delta + (1 - beta), delta from the topic's band of
  // each (token, sense) and the strength's four values, annealed as in the paper
  function topicSteering(model, bands, values) {
    const d = model.d,
      k = model.k;
    let top = -Infinity;
    for (let i = 0; i < bands.length; i++) top = Math.max(top, values[bands[i]]);
    const f = top / 7.5;
    return function (ids, senses) {
      const n = ids.length;
      return senses.map(function (c, j) {
        const out = new Float32Array(k * d);
        for (let l = 0; l < k; l++) {
          let reach = 0; // sum over the sequence of max(0, C(x_j)_l . E[x_j'])
          for (let m = 0; m < n; m++)
            reach += Math.max(0, dot(c, l * d, model.E, ids[m] * d, d));
          const beta = (1 / (1 + Math.exp(-(6 - f * reach)))) * (1 + j / 100);
          const w = beta * values[bands[ids[j] * k + l]] + (1 - beta);
          for (let i = 0; i < d; i++) out[l * d + i] = c[l * d + i] * w;
        }
        return out;
      });
    };
  }

  // chapter 9's bias: the mean over prompts of exp |logit(he) - logit(she)|
  async function biasScore(model, prompts, he, she, edits, onProgress) {
    let sum = 0;
    for (let p = 0; p < prompts.length; p++) {
      const cache = model.start();
      for (const id of prompts[p]) model.push(cache, id);
      const logits = model.logits(cache, edits, [he, she]);
      sum += Math.exp(Math.abs(logits[he] - logits[she]));
      if (onProgress && p % 20 === 19) {
        onProgress(p + 1, prompts.length);
        await new Promise((resolve) => setTimeout(resolve, 0));
      }
    }
    return sum / prompts.length;
  }
  // [/interventions]

  global.Backpack = {
    receive: receive,
    loadBundle: loadBundle,
    Tokenizer: Tokenizer,
    BackpackModel: BackpackModel,
    generate: generate,
    sampleNext: sampleNext,
    topIds: topIds,
    reweight: reweight,
    editFact: editFact,
    topicSteering: topicSteering,
    biasScore: biasScore,
    halfTable: halfTable,
    base64Bytes: base64Bytes,
  };
})(window);

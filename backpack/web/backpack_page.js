// backpack_page.js: the controls of the page that runs the Backpack in the browser
// (chapter 9, last section). The model itself is backpack.js; this file only draws the
// page: load, continue a prompt, read senses, ask why, intervene, measure the bias.
(function () {
  "use strict";
  const here = document.currentScript.src;
  const BUNDLE = here.slice(0, here.lastIndexOf("/")) + "/backpack-web";
  const root = document.getElementById("backpack-app");
  if (!root) return;
  let B = null; // {model, tokenizer, extras} once loaded

  const STYLE =
    "#backpack-app{border:1px solid #ccc;border-radius:6px;padding:10px;" +
    "font-size:14px}#backpack-app fieldset{border:1px solid #ddd;margin:6px 0;" +
    "padding:4px 8px}#backpack-app .bp-text{font-family:monospace;white-space:pre-wrap;" +
    "line-height:1.7}#backpack-app .bp-tok{cursor:pointer;border-bottom:1px dotted #999}" +
    "#backpack-app .bp-new{background:#e6f0ff}#backpack-app table{font:12px monospace;" +
    "border-collapse:collapse;margin:4px 0}#backpack-app td,#backpack-app th{border:1px " +
    "solid #ccc;padding:1px 5px}#backpack-app progress{width:40%}" +
    "#backpack-app legend{font-size:1em;font-weight:bold;width:auto;padding:0 4px}" +
    "#backpack-app input[type=number]{width:5em}#backpack-app input,#backpack-app " +
    "select,#backpack-app textarea{display:inline-block;width:auto;max-width:100%}";

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    Object.entries(attrs || {}).forEach(([k, v]) => {
      if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    });
    (children || []).forEach((c) => node.appendChild(c));
    return node;
  }
  const byId = (id) => root.querySelector("#bp-" + id);
  const visible = (t) =>
    t.replace(/ /g, "\u2423").replace(/\n/g, "\u23ce").replace(/\t/g, "\u21e5");
  const say = (id, text) => {
    byId(id).textContent = text;
  };

  root.innerHTML =
    "<style>" +
    STYLE +
    "</style>" +
    "<p><button id='bp-load'>Load the Backpack</button> <progress id='bp-progress' " +
    "value='0' max='1'></progress> <span id='bp-status'>not loaded (nothing is " +
    "downloaded until you click)</span></p>" +
    "<div id='bp-main' hidden>" +
    "<fieldset><legend>Continue a text</legend>" +
    "<textarea id='bp-prompt' rows='2' cols='70'>The captain of the ship said that" +
    "</textarea><br>new tokens <input id='bp-count' type='number' value='30' min='1' " +
    "max='200' size='4'> <label><input id='bp-sample' type='checkbox'> sample</label> " +
    "temperature <input id='bp-temp' type='number' value='0.8' step='0.1' min='0.0001' " +
    "size='4'> top-k <input id='bp-topk' type='number' value='40' min='0' size='4'> " +
    "seed <input id='bp-seed' type='number' value='0' min='0' size='6'> " +
    "<button id='bp-go'>Continue</button><div id='bp-out'></div>" +
    "<div id='bp-speed'></div></fieldset>" +
    "<fieldset><legend>Why this next token? (interventions applied)</legend>" +
    "<button id='bp-why'>Explain the next token after the text</button>" +
    "<div id='bp-whyout'></div></fieldset>" +
    "<fieldset><legend>Senses of a word (click any word of the text, or type " +
    "one)</legend><input id='bp-word' value='nurse' size='16'> <button " +
    "id='bp-senses'>Show its senses</button><div id='bp-sensesout'></div></fieldset>" +
    "<fieldset><legend>Interventions</legend><label><input id='bp-debias' " +
    "type='checkbox'> debias: <span id='bp-gender'></span></label><br>topic <select " +
    "id='bp-topic'><option value=''>none</option></select> strength <select " +
    "id='bp-strength'><option>1</option><option selected>2</option><option>3</option>" +
    "</select><br><label><input id='bp-fact' type='checkbox'> edit a fact:</label> " +
    "<input id='bp-factword' value='Sherlock' size='10'> predicts <input " +
    "id='bp-factnew' value='Smith' size='10'> where it predicted <input " +
    "id='bp-factold' value='Holmes' size='10'><div id='bp-editinfo'></div>" +
    "<button id='bp-bias'>Measure the bias (the paper's Table 5 score; half a " +
    "minute)</button> " +
    "<span id='bp-biasout'></span></fieldset></div>";

  // one token id of a word written inside a sentence (a space in front), or an error
  function wordId(word) {
    const ids = B.tokenizer.encode(" " + word.trim());
    if (ids.length !== 1) {
      throw new Error(
        "'" +
          word.trim() +
          "' is not one token: the tokenizer splits it " +
          "into " +
          ids.map((i) => "'" + B.tokenizer.decode([i]) + "'").join(", "),
      );
    }
    return ids[0];
  }

  // the interventions that are on, in the order `backpack demo` applies them
  function activeEdits() {
    const m = B.model,
      x = B.extras,
      edits = [],
      names = [];
    byId("editinfo").textContent = "";
    if (byId("debias").checked) {
      edits.push(Backpack.reweight(m, Object.values(x.professions), x.gender_sense, 0));
      names.push("debiasing");
    }
    const topic = byId("topic").value;
    if (topic) {
      const strength = byId("strength").value;
      edits.push(
        Backpack.topicSteering(m, B.bands[topic], x.topic_strengths[strength]),
      );
      names.push("topic " + topic + " at strength " + strength);
    }
    if (byId("fact").checked) {
      try {
        const w = wordId(byId("factword").value),
          o = wordId(byId("factold").value);
        edits.push(Backpack.editFact(m, w, o, wordId(byId("factnew").value)));
        names.push("fact edit");
      } catch (error) {
        byId("editinfo").textContent = "fact edit off: " + error.message;
      }
    }
    return { edits: edits, names: names };
  }

  function tokenSpans(ids, start) {
    return ids.map(function (id, i) {
      const span = el("span", {
        class: "bp-tok" + (i >= start ? " bp-new" : ""),
        text: B.tokenizer.decode([id]),
      });
      span.title = "token " + id + ": click for its senses";
      span.addEventListener("click", () => showSenses([id]));
      return span;
    });
  }

  // a whole number in [low, high] from an input, or an error that says what to type
  function wholeNumber(id, what, low, high) {
    const text = byId(id).value.trim(),
      value = Number(text);
    if (!/^[0-9]+$/.test(text) || value < low || value > high) {
      throw new Error(
        what +
          " must be a whole number from " +
          low +
          " to " +
          high +
          "; got '" +
          text +
          "'",
      );
    }
    return value;
  }

  // the generation settings of the page's inputs, checked
  function generationOptions(promptLength) {
    const room = B.model.config.n_positions - promptLength;
    if (room < 1) {
      throw new Error(
        "the text has " +
          promptLength +
          " tokens and the model reads " +
          B.model.config.n_positions +
          " at most: shorten it",
      );
    }
    const count = wholeNumber("count", "new tokens", 1, Math.min(200, room));
    if (!byId("sample").checked) return { count: count, temperature: 0 };
    const temperature = Number(byId("temp").value);
    if (!(temperature >= 1e-4) || !isFinite(temperature)) {
      throw new Error(
        "temperature must be a number >= 0.0001 (untick 'sample' for " +
          "greedy decoding); got '" +
          byId("temp").value +
          "'",
      );
    }
    return {
      count: count,
      temperature: temperature,
      topK: wholeNumber("topk", "top-k (0: no cut)", 0, B.model.vocab),
      seed: wholeNumber("seed", "seed", 0, 4294967295),
    };
  }

  async function continueText() {
    const ids = B.tokenizer.encode(byId("prompt").value);
    const out = byId("out");
    out.innerHTML = "";
    say("speed", "");
    if (!ids.length) {
      out.textContent = "type some text first";
      return;
    }
    let options;
    try {
      options = generationOptions(ids.length);
    } catch (error) {
      out.textContent = error.message;
      return;
    }
    const count = options.count;
    const active = activeEdits();
    const runs = [["unmodified", []]];
    if (active.edits.length)
      runs.push(["with " + active.names.join(", "), active.edits]);
    for (const [name, edits] of runs) {
      const line = el("div", { class: "bp-text" }, [el("b", { text: name + ": " })]);
      out.appendChild(line);
      tokenSpans(ids, ids.length).forEach((s) => line.appendChild(s));
      const t0 = performance.now();
      let first = null;
      const made = await Backpack.generate(
        B.model,
        ids,
        count,
        Object.assign(
          {
            edits: edits,
            onToken: function (id) {
              if (first === null) first = performance.now() - t0;
              tokenSpans([id], 0).forEach((s) => line.appendChild(s));
            },
          },
          options,
        ),
      );
      const seconds = (performance.now() - t0) / 1000;
      say(
        "speed",
        name +
          ": " +
          made.length +
          " tokens in " +
          seconds.toFixed(2) +
          " s (" +
          (made.length / seconds).toFixed(1) +
          " tokens/s; first token after " +
          (first / 1000).toFixed(2) +
          " s)",
      );
    }
  }

  function showSenses(ids) {
    const out = byId("sensesout");
    out.innerHTML = "";
    for (const id of ids) {
      const rows = B.model.senseTopWords(id, 6);
      const table = el("table", {}, [
        el("tr", {}, [
          el("th", { text: "sense of " + visible(B.tokenizer.decode([id])) }),
          el("th", { text: "the words it pushes up most (E C(x)_l, largest first)" }),
        ]),
      ]);
      rows.forEach(function (row, l) {
        table.appendChild(
          el("tr", {}, [
            el("td", { text: String(l) }),
            el("td", {
              text: row.map(([v]) => visible(B.tokenizer.decode([v]))).join("  "),
            }),
          ]),
        );
      });
      out.appendChild(table);
    }
  }

  function explain() {
    const ids = B.tokenizer.encode(byId("prompt").value),
      out = byId("whyout");
    if (!ids.length) {
      out.textContent = "type some text first";
      return;
    }
    const active = activeEdits(),
      m = B.model,
      cache = m.start();
    ids.forEach((id) => m.push(cache, id));
    const logits = m.logits(cache, active.edits),
      target = Backpack.topIds(logits, 1)[0];
    const terms = m.contributions(cache, active.edits, target),
      flat = [];
    let total = 0;
    terms.forEach((row, j) =>
      row.forEach((v, l) => {
        total += v;
        flat.push([v, j, l]);
      }),
    );
    flat.sort((a, b) => Math.abs(b[0]) - Math.abs(a[0]));
    const name = visible(B.tokenizer.decode([target]));
    out.innerHTML = "";
    out.appendChild(
      el("p", {
        text:
          "next token '" +
          name +
          "' (" +
          (active.names.join(", ") || "no intervention") +
          "): logit " +
          logits[target].toFixed(4) +
          " = the sum of its " +
          flat.length +
          " contributions, " +
          total.toFixed(4) +
          ". The largest:",
      }),
    );
    const table = el("table", {}, [
      el(
        "tr",
        {},
        ["source word", "position", "sense", "contribution"].map((t) =>
          el("th", { text: t }),
        ),
      ),
    ]);
    flat.slice(0, 8).forEach(function ([v, j, l]) {
      table.appendChild(
        el(
          "tr",
          {},
          [
            visible(B.tokenizer.decode([ids[j]])),
            String(j),
            String(l),
            v.toFixed(3),
          ].map((t) => el("td", { text: t })),
        ),
      );
    });
    out.appendChild(table);
  }

  async function measureBias() {
    const x = B.extras,
      m = B.model,
      active = activeEdits();
    const progress = (done, all) => say("biasout", "measuring... " + done + "/" + all);
    const before = await Backpack.biasScore(
      m,
      x.bias_prompts,
      x.he,
      x.she,
      [],
      progress,
    );
    let text = "unmodified " + before.toFixed(2);
    if (active.edits.length) {
      const after = await Backpack.biasScore(
        m,
        x.bias_prompts,
        x.he,
        x.she,
        active.edits,
        progress,
      );
      text += "; with " + active.names.join(", ") + " " + after.toFixed(2);
    }
    say("biasout", text + " (over " + x.bias_prompts.length + " prompts; 1 = no bias)");
  }

  function busy(button, work) {
    return async function () {
      const buttons = root.querySelectorAll("button");
      buttons.forEach((b) => {
        b.disabled = true;
      });
      try {
        await work();
      } catch (error) {
        say("status", "error: " + error.message);
      }
      buttons.forEach((b) => {
        b.disabled = false;
      });
    };
  }

  byId("load").addEventListener(
    "click",
    busy(byId("load"), async function () {
      const t0 = performance.now();
      B = await Backpack.loadBundle(BUNDLE, function (done, total) {
        byId("progress").value = done / total;
        say(
          "status",
          (done / 1e6).toFixed(1) + " of " + (total / 1e6).toFixed(1) + " MB",
        );
      });
      B.bands = {};
      Object.entries(B.extras.topic_bands).forEach(function ([name, text]) {
        B.bands[name] = Backpack.base64Bytes(text); // (vocab, k) bands, one byte each
        byId("topic").appendChild(el("option", { value: name, text: name }));
      });
      say(
        "gender",
        "weight 0 on sense " +
          B.extras.gender_sense +
          " of " +
          Object.keys(B.extras.professions).length +
          " professions",
      );
      say("status", "loaded in " + ((performance.now() - t0) / 1000).toFixed(1) + " s");
      byId("load").hidden = true;
      byId("main").hidden = false;
      window.backpackPage = B; // for the curious, in the browser's console
    }),
  );
  byId("go").addEventListener("click", busy(byId("go"), continueText));
  byId("why").addEventListener(
    "click",
    busy(byId("why"), async () => explain()),
  );
  byId("senses").addEventListener(
    "click",
    busy(byId("senses"), async function () {
      showSenses(B.tokenizer.encode(" " + byId("word").value.trim()));
    }),
  );
  byId("bias").addEventListener("click", busy(byId("bias"), measureBias));
})();

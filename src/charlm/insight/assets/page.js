"use strict";
// The inspection page: builds the text once, then colours it for the chosen view. No network access.
(function () {
  const D = JSON.parse(document.getElementById("data").textContent);
  const text = Array.from(D.text);  // code points, as the model's vocabulary counts them
  const vocab = Array.from(D.vocab);
  const tip = document.getElementById("tip");
  const $ = (id) => document.getElementById(id);

  function bytes(b64) {
    const s = atob(b64), out = new Uint8Array(s.length);
    for (let i = 0; i < s.length; i++) out[i] = s.charCodeAt(i);
    return out;
  }
  const typed = (b64, T) => new T(bytes(b64).buffer);
  const shown = (ch) => ch === "\n" ? "↵" : ch === " " ? "␣" : ch === "\t" ? "→" : ch;
  const esc = (s) => s.replace(/[&<>]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;" })[c]);

  // ---- colour ramps ------------------------------------------------------------------------
  function lerp(stops, x) {
    x = Math.max(0, Math.min(1, x));
    const f = x * (stops.length - 1), i = Math.min(stops.length - 2, Math.floor(f)), t = f - i;
    const a = stops[i], b = stops[i + 1];
    return `rgb(${a.map((v, k) => Math.round(v + (b[k] - v) * t)).join(",")})`;
  }
  const REDS = [[255, 255, 255], [253, 212, 158], [252, 141, 89], [215, 48, 31], [127, 0, 0]];
  const DIVERGING = [[33, 102, 172], [247, 247, 247], [178, 24, 43]];
  const BLUES = [[255, 255, 255], [198, 219, 239], [66, 146, 198], [8, 48, 107]];
  const palette = (stops, n) => Array.from({ length: n }, (_, i) => lerp(stops, i / (n - 1)));
  const RED_P = palette(REDS, 64), DIV_P = palette(DIVERGING, 65), BLUE_P = palette(BLUES, 64);
  const MAX_BITS = 8;

  // ---- the text, one span per character ----------------------------------------------------
  function build(container, chars, offset) {
    const frag = document.createDocumentFragment();
    const spans = new Array(chars.length);
    chars.forEach((ch, i) => {
      const s = document.createElement("span");
      if (ch === "\n") { s.textContent = "↵\n"; s.className = "nl"; } else s.textContent = ch;
      s.i = offset + i;
      spans[i] = s;
      frag.appendChild(s);
    });
    container.appendChild(frag);
    return spans;
  }
  const main = $("text");
  const spans = build(main, text, 0);

  // ---- surprise ----------------------------------------------------------------------------
  const S = D.surprise;
  const bits = typed(S.bits, Float32Array), topIds = typed(S.top_ids, Uint16Array), topP = bytes(S.top_probs);
  $("surprise-scale").textContent = `0 … ${MAX_BITS}+ bits`;
  $("surprise-stats").innerHTML =
    `<b>${S.bpc.toFixed(4)}</b> bits per character over ${S.chars.toLocaleString()} scored characters ` +
    `(context=${S.context}; the first character has no prediction)`;
  function surpriseTip(i) {
    if (!isFinite(bits[i])) return `${JSON.stringify(text[i])}  position ${i}\n(first character: nothing predicts it)`;
    const p = Math.pow(2, -bits[i]);
    let s = `${JSON.stringify(text[i])}  position ${i}\n${bits[i].toFixed(2)} bits  (p = ${(100 * p).toFixed(1)}%)\nmodel's top ${S.k}:`;
    for (let r = 0; r < S.k; r++) {
      const ch = vocab[topIds[i * S.k + r]], pr = topP[i * S.k + r] / 255;
      s += `\n ${ch === text[i] ? "▶" : " "} ${JSON.stringify(ch).padEnd(6)} ${(100 * pr).toFixed(1).padStart(5)}%`;
    }
    return s;
  }
  function colourSurprise() {
    for (let i = 0; i < spans.length; i++) {
      const b = bits[i];
      spans[i].style.backgroundColor = isFinite(b) ? RED_P[Math.min(63, Math.round((b / MAX_BITS) * 63))] : "";
    }
  }

  // ---- neurons -----------------------------------------------------------------------------
  const N = D.neurons;
  let unit = null;
  if (N) {
    const select = $("unit-select");
    N.units.forEach((u) => { u.data = typed(u.values, Int8Array); select.add(new Option(u.label, u.key)); });
    select.value = N.chosen;
    select.addEventListener("change", () => chooseUnit(select.value));
    let html = `<p class="hint">Unit search: for each property of the text (computed from the characters alone), ` +
      `the units whose activation correlates most with it (Pearson r over the whole text). Click a unit to colour the text by it.</p>` +
      `<table><tr><th>property</th><th>what it is</th><th>top units (r)</th></tr>`;
    for (const [name, found] of Object.entries(N.search)) {
      const cells = found.length ? found.map((f) => `<td class="unit" data-key="${f.key}">${esc(f.label)} (${f.r >= 0 ? "+" : ""}${f.r.toFixed(2)})</td>`).join("")
        : `<td>— the text does not vary in this property</td>`;
      html += `<tr><th>${name}</th><td class="doc">${esc(N.docs[name] || "")}</td>${cells}</tr>`;
    }
    $("unit-search").innerHTML = html + "</table>";
    $("unit-search").addEventListener("click", (e) => {
      const key = e.target.dataset && e.target.dataset.key;
      if (key) { select.value = key; chooseUnit(key); }
    });
    unit = N.units.find((u) => u.key === N.chosen);
  }
  function chooseUnit(key) { unit = N.units.find((u) => u.key === key); colourUnit(); }
  function colourUnit() {
    $("unit-scale").textContent = `−${unit.scale.toFixed(2)} … 0 … +${unit.scale.toFixed(2)}`;
    for (let i = 0; i < spans.length; i++) spans[i].style.backgroundColor = DIV_P[Math.round((unit.data[i] + 127) / 254 * 64)];
  }
  const unitTip = (i) => `${JSON.stringify(text[i])}  position ${i}\nunit ${unit.label} = ${(unit.data[i] / 127 * unit.scale).toFixed(3)}`;

  // ---- attention ---------------------------------------------------------------------------
  const A = D.attention;
  let attSpans = [], attRow = -1;
  if (A) {
    const W = A.length, weights = bytes(A.weights);
    const layerSel = $("att-layer"), headSel = $("att-head"), canvas = $("att-canvas");
    for (let l = 0; l < A.layers; l++) layerSel.add(new Option(String(l), String(l)));
    for (let h = 0; h < A.heads; h++) headSel.add(new Option(String(h), String(h)));
    attSpans = build($("att-text"), text.slice(A.start, A.start + W), A.start);
    const cell = Math.max(2, Math.min(8, Math.floor(640 / W)));
    canvas.width = canvas.height = W * cell;
    const at = (r, c) => weights[((+layerSel.value * A.heads + +headSel.value) * W + r) * W + c];
    function drawHeatmap() {
      const ctx = canvas.getContext("2d");
      for (let r = 0; r < W; r++) for (let c = 0; c < W; c++) {
        ctx.fillStyle = BLUE_P[Math.round(at(r, c) / 255 * 63)];
        ctx.fillRect(c * cell, r * cell, cell, cell);
      }
      if (attRow >= 0) { ctx.strokeStyle = "#e6550d"; ctx.lineWidth = 1; ctx.strokeRect(0.5, attRow * cell + 0.5, W * cell - 1, cell - 1); }
      colourRow(attRow);
    }
    function colourRow(r) {
      attSpans.forEach((s, c) => {
        s.style.backgroundColor = r < 0 ? "" : c === r ? "#fdae6b" : c < r ? BLUE_P[Math.round(at(r, c) / 255 * 63)] : "";
        s.style.color = r >= 0 && c <= r && at(r, c) > 160 ? "#fff" : "";
      });
    }
    layerSel.addEventListener("change", drawHeatmap);
    headSel.addEventListener("change", drawHeatmap);
    $("att-text").addEventListener("mouseover", (e) => { if (e.target.i !== undefined) { attRow = e.target.i - A.start; drawHeatmap(); } });
    canvas.addEventListener("mousemove", (e) => {
      const r = Math.floor(e.offsetY / cell);
      if (r !== attRow && r >= 0 && r < W) { attRow = r; drawHeatmap(); }
    });
    A.draw = drawHeatmap;
    A.tip = (i) => {
      const r = i - A.start; if (r < 0 || r >= W) return null;
      const row = Array.from({ length: r + 1 }, (_, c) => [c, at(r, c) / 255]).sort((a, b) => b[1] - a[1]).slice(0, 5);
      return `${JSON.stringify(text[i])}  position ${i}, layer ${layerSel.value} head ${headSel.value}\nattends most to:` +
        row.map(([c, w]) => `\n  ${JSON.stringify(text[A.start + c]).padEnd(6)} at ${A.start + c}  ${(100 * w).toFixed(1)}%`).join("");
    };
    $("summary").dataset.att = `attention over characters ${A.start}..${A.start + W - 1}`;
  }

  // ---- tabs, tooltips, keyboard ------------------------------------------------------------
  const available = { surprise: true, neurons: !!N, attention: !!A };
  const why = { neurons: "recurrent models (rnn, lstm, gru) only", attention: "the transformer only" };
  let view = "surprise";
  const tabs = $("tabs");
  for (const name of ["surprise", "neurons", "attention"]) {
    const b = document.createElement("button");
    b.textContent = name[0].toUpperCase() + name.slice(1);
    b.setAttribute("role", "tab");
    b.id = `tab-${name}`;
    if (!available[name]) { b.disabled = true; b.title = `for ${why[name]}`; }
    b.addEventListener("click", () => show(name));
    tabs.appendChild(b);
  }
  function show(name) {
    if (!available[name]) name = "surprise";
    view = name;
    document.querySelectorAll(".view").forEach((v) => v.classList.toggle("active", v.dataset.view === name));
    tabs.querySelectorAll("button").forEach((b) => b.setAttribute("aria-selected", String(b.id === `tab-${name}`)));
    document.body.classList.toggle("no-main-text", name === "attention");
    if (name === "surprise") colourSurprise();
    else if (name === "neurons") colourUnit();
    else A.draw();
    if (location.hash !== `#${name}`) history.replaceState(null, "", `#${name}`);
  }
  const notes = Object.entries(D.notes || {}).map(([k, v]) => `${esc(k)}: <code>${esc(v)}</code>`);
  $("summary").innerHTML = [`${text.length.toLocaleString()} characters`, ...notes, $("summary").dataset.att || ""].filter(Boolean).join(" · ");

  function tipFor(i) { return view === "surprise" ? surpriseTip(i) : view === "neurons" ? unitTip(i) : A.tip(i); }
  function place(el, content) {
    if (!content) { tip.hidden = true; return; }
    tip.textContent = content;
    tip.hidden = false;
    const r = el.getBoundingClientRect();
    const x = Math.min(window.innerWidth - tip.offsetWidth - 8, r.left);
    const y = r.bottom + 6 + tip.offsetHeight > window.innerHeight ? r.top - tip.offsetHeight - 6 : r.bottom + 6;
    tip.style.left = `${Math.max(4, x)}px`; tip.style.top = `${Math.max(4, y)}px`;
  }
  for (const [box, list, first] of [[main, spans, 0], [$("att-text"), attSpans, A ? A.start : 0]]) {
    let cur = -1;
    box.addEventListener("mouseover", (e) => { if (e.target.i !== undefined) place(e.target, tipFor(e.target.i)); });
    box.addEventListener("mouseleave", () => { tip.hidden = true; });
    box.addEventListener("keydown", (e) => {
      const step = { ArrowRight: 1, ArrowLeft: -1, ArrowDown: 80, ArrowUp: -80 }[e.key];
      if (!step || !list.length) return;
      e.preventDefault();
      if (cur >= 0) list[cur].classList.remove("cur");
      cur = Math.max(0, Math.min(list.length - 1, cur + step));
      const s = list[cur];
      s.classList.add("cur");
      s.scrollIntoView({ block: "nearest" });
      if (box !== main && A) { attRow = cur; A.draw(); }
      place(s, tipFor(first + cur));
    });
    box.addEventListener("blur", () => { tip.hidden = true; });
  }
  show((location.hash || "#surprise").slice(1));
})();

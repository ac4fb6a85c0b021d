"""The attention viewer's stylesheet and script, written inline into every page (no network).

The page draws on one ``<canvas>``: thousands of lines or cells as a few paths and one image,
where SVG would need a DOM node each. Its root element exposes what it shows as data
attributes (``data-n-layers``, ``data-n-heads``, ``data-n-tokens``, ``data-layer``,
``data-heads``, ``data-view``, ``data-first-draw-ms``, ``data-ready``) for scripts and tests.
"""

CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 16px; color: #222; background: #fff; }
h1 { font-size: 18px; margin: 0 0 8px; }
.controls { display: flex; flex-wrap: wrap; gap: 12px; align-items: center; margin: 8px 0; }
.heads { display: inline-flex; flex-wrap: wrap; gap: 3px; }
.head-toggle { display: inline-block; min-width: 22px; padding: 1px 3px; text-align: center; cursor: pointer;
  border: 2px solid transparent; border-radius: 3px; color: #fff; font-size: 12px; user-select: none; }
.head-toggle.off { opacity: 0.25; }
nav button { font: inherit; padding: 3px 10px; border: 1px solid #999; background: #f4f4f4; cursor: pointer; }
nav button.active { background: #2b6cb0; color: #fff; border-color: #2b6cb0; }
.hint { color: #666; font-size: 12px; margin: 4px 0 8px; }
#ak-stage { overflow: auto; max-height: 80vh; border: 1px solid #ddd; }
#ak-canvas { display: block; }
details { margin-top: 8px; font-size: 12px; }
#ak-tokens { columns: 6; margin: 4px 0; }
.error { color: #b00; font-weight: bold; }
"""

JS = r"""
(function () {
  "use strict";
  const T0 = performance.now();
  const root = document.getElementById("attnkit-viewer");
  const DATA = JSON.parse(document.getElementById("attnkit-data").textContent);
  const COLORS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                  "#bcbd22", "#17becf", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd"];
  const color = (h) => COLORS[h % COLORS.length];
  const canvas = document.getElementById("ak-canvas");
  const ctx = canvas.getContext("2d", { willReadFrequently: true });
  const state = { group: 0, layer: 0, heads: new Set(), view: "head", hover: -1 };
  const cache = new Map();
  let draws = 0;

  function bytes(b64) {
    const bin = atob(b64);
    const out = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
    return out;
  }
  async function inflate(b64) {
    const stream = new Blob([bytes(b64)]).stream().pipeThrough(new DecompressionStream("deflate"));
    return new Uint8Array(await new Response(stream).arrayBuffer());
  }
  function layerData(g, l) {
    const key = g + ":" + l;
    if (!cache.has(key)) cache.set(key, inflate(DATA.groups[g].layers[l]));
    return cache.get(key);
  }
  function thumbData(g) {
    const key = g + ":thumbs";
    if (!cache.has(key)) cache.set(key, inflate(DATA.groups[g].thumbs));
    return cache.get(key);
  }
  const G = () => DATA.groups[state.group];

  // -- controls -------------------------------------------------------------------------
  const groupSel = document.getElementById("ak-group");
  const layerSel = document.getElementById("ak-layer");
  const headBox = document.getElementById("ak-heads");
  const tokenList = document.getElementById("ak-tokens");
  DATA.groups.forEach((g, i) => groupSel.add(new Option(g.label, String(i))));
  groupSel.parentElement.style.display = DATA.groups.length > 1 ? "" : "none";

  function setGroup(i) {
    state.group = i;
    const g = G();
    state.layer = Math.min(state.layer, g.n_layers - 1);
    layerSel.innerHTML = "";
    for (let l = 0; l < g.n_layers; l++) layerSel.add(new Option(String(l), String(l)));
    layerSel.value = String(state.layer);
    headBox.innerHTML = "";
    state.heads = new Set();
    // Long inputs open with one head: every line of every head would be a hundred thousand strokes.
    const many = g.q_tokens.length * g.k_tokens.length > 128 * 128;
    for (let h = 0; h < g.n_heads; h++) {
      if (!many || h === 0) state.heads.add(h);
      const s = document.createElement("span");
      s.className = "head-toggle";
      s.textContent = String(h);
      s.dataset.head = String(h);
      s.style.background = color(h);
      s.title = "click: show or hide head " + h + "; double-click: only this head";
      headBox.appendChild(s);
    }
    syncHeads();
    tokenList.innerHTML = "";
    for (const t of g.q_tokens) {
      const li = document.createElement("li");
      li.className = "token";
      li.textContent = t;
      tokenList.appendChild(li);
    }
    root.dataset.nLayers = String(g.n_layers);
    root.dataset.nHeads = String(g.n_heads);
    root.dataset.nTokens = String(g.q_tokens.length);
    root.dataset.nKeys = String(g.k_tokens.length);
  }
  function syncHeads() {
    for (const s of headBox.children) s.classList.toggle("off", !state.heads.has(+s.dataset.head));
  }
  groupSel.addEventListener("change", () => { setGroup(+groupSel.value); draw(); });
  layerSel.addEventListener("change", () => { state.layer = +layerSel.value; draw(); });
  headBox.addEventListener("click", (e) => {
    const h = e.target.dataset && e.target.dataset.head;
    if (h === undefined) return;
    if (state.heads.has(+h)) state.heads.delete(+h); else state.heads.add(+h);
    syncHeads(); draw();
  });
  headBox.addEventListener("dblclick", (e) => {
    const h = e.target.dataset && e.target.dataset.head;
    if (h === undefined) return;
    state.heads = new Set([+h]);
    syncHeads(); draw();
  });
  document.getElementById("ak-all").addEventListener("click", () => {
    state.heads = new Set([...Array(G().n_heads).keys()]);
    syncHeads(); draw();
  });
  for (const b of document.querySelectorAll("nav button")) {
    b.addEventListener("click", () => { state.view = b.dataset.view; draw(); });
  }

  // -- drawing ---------------------------------------------------------------------------
  function size(w, h) {
    canvas.width = Math.max(1, Math.ceil(w));
    canvas.height = Math.max(1, Math.ceil(h));
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
  }
  function textWidth(tokens, font) {
    ctx.font = font;
    let m = 0;
    for (const t of tokens) m = Math.max(m, ctx.measureText(t).width);
    return Math.min(180, Math.ceil(m) + 10);
  }
  let headGeom = null;

  function drawHead(w) {
    const g = G(), tq = g.q_tokens.length, tk = g.k_tokens.length;
    const rowH = Math.max(tq, tk) > 64 ? 12 : 18, font = (rowH > 12 ? 12 : 10) + "px sans-serif";
    const colQ = textWidth(g.q_tokens, font), colK = textWidth(g.k_tokens, font), gap = 260, top = 8;
    size(colQ + gap + colK, top * 2 + Math.max(tq, tk) * rowH);
    headGeom = { rowH, top, colQ, tq };
    ctx.font = font;
    ctx.textBaseline = "middle";
    ctx.fillStyle = "#222";
    ctx.textAlign = "right";
    g.q_tokens.forEach((t, i) => {
      if (state.hover === i) { ctx.fillStyle = "#ddeeff"; ctx.fillRect(0, top + i * rowH, colQ, rowH); ctx.fillStyle = "#222"; }
      ctx.fillText(t, colQ - 5, top + (i + 0.5) * rowH);
    });
    ctx.textAlign = "left";
    g.k_tokens.forEach((t, j) => ctx.fillText(t, colQ + gap + 5, top + (j + 0.5) * rowH));
    const x1 = colQ, x2 = colQ + gap, NB = 16;
    const rows = state.hover >= 0 ? [state.hover] : [...Array(tq).keys()];
    const minByte = state.hover >= 0 ? 12 : 26; // p >= 0.002 for one row, p >= 0.01 for all rows
    ctx.lineWidth = 1; // a hairline: the rasteriser's fast path for thousands of lines
    for (const h of [...state.heads].sort((a, b) => a - b)) {
      const paths = Array.from({ length: NB }, () => new Path2D());
      const used = new Uint8Array(NB);
      for (const i of rows) {
        const base = (h * tq + i) * tk, y1 = top + (i + 0.5) * rowH;
        for (let j = 0; j < tk; j++) {
          const b = w[base + j];
          if (b < minByte) continue;
          const p = (b / 255) * (b / 255), k = Math.min(NB - 1, Math.floor(p * NB));
          paths[k].moveTo(x1, y1);
          paths[k].lineTo(x2, top + (j + 0.5) * rowH);
          used[k] = 1;
        }
      }
      ctx.strokeStyle = color(h);
      for (let k = 0; k < NB; k++) {
        if (!used[k]) continue;
        ctx.globalAlpha = Math.min(1, (k + 0.5) / NB + 0.05);
        ctx.stroke(paths[k]);
      }
    }
    ctx.globalAlpha = 1;
  }

  function mean(w, heads, tq, tk) {
    const n = tq * tk, out = new Float32Array(n);
    if (!heads.length) return out;
    for (const h of heads) {
      const off = h * n;
      for (let x = 0; x < n; x++) { const b = w[off + x]; out[x] += b * b; }
    }
    const s = 1 / (heads.length * 65025);
    for (let x = 0; x < n; x++) out[x] *= s;
    return out;
  }
  function shade(img, idx, v) { // v = round(255 sqrt(p)): white to dark blue
    img.data[idx] = 255 - v; img.data[idx + 1] = 255 - Math.round(v * 0.62); img.data[idx + 2] = 255 - Math.round(v * 0.15); img.data[idx + 3] = 255;
  }

  function drawMatrix(w) {
    const g = G(), tq = g.q_tokens.length, tk = g.k_tokens.length;
    const cell = Math.max(1, Math.min(16, Math.floor(720 / Math.max(tq, tk))));
    const labels = cell >= 8, font = "10px sans-serif";
    const left = labels ? textWidth(g.q_tokens, font) : 4, top = labels ? textWidth(g.k_tokens, font) : 4;
    size(left + tk * cell + 4, top + tq * cell + 4);
    const p = mean(w, [...state.heads], tq, tk);
    const img = ctx.createImageData(tk * cell, tq * cell);
    for (let i = 0; i < tq; i++) for (let j = 0; j < tk; j++) {
      const v = Math.round(255 * Math.sqrt(p[i * tk + j]));
      for (let a = 0; a < cell; a++) for (let c = 0; c < cell; c++) shade(img, ((i * cell + a) * tk * cell + j * cell + c) * 4, v);
    }
    ctx.putImageData(img, left, top);
    if (labels) {
      ctx.font = font; ctx.fillStyle = "#222"; ctx.textBaseline = "middle";
      ctx.textAlign = "right";
      g.q_tokens.forEach((t, i) => ctx.fillText(t, left - 4, top + (i + 0.5) * cell));
      ctx.save();
      ctx.rotate(-Math.PI / 2);
      ctx.textAlign = "left";
      g.k_tokens.forEach((t, j) => ctx.fillText(t, -top + 4, left + (j + 0.5) * cell));
      ctx.restore();
    }
  }

  let modelGeom = null;
  function drawModel(th) {
    const g = G(), [s1, s2] = DATA.groups[state.group].thumb, L = g.n_layers, H = g.n_heads;
    const k = Math.max(1, Math.floor(72 / Math.max(s1, s2))), cw = s2 * k + 8, ch = s1 * k + 8, left = 34, top = 18;
    size(left + H * cw, top + L * ch);
    modelGeom = { k, cw, ch, left, top, L, H };
    ctx.font = "11px sans-serif"; ctx.fillStyle = "#222"; ctx.textAlign = "center"; ctx.textBaseline = "middle";
    for (let h = 0; h < H; h++) ctx.fillText("H" + h, left + h * cw + cw / 2, top / 2);
    for (let l = 0; l < L; l++) ctx.fillText("L" + l, left / 2, top + l * ch + ch / 2);
    const img = ctx.createImageData(s2 * k, s1 * k);
    for (let l = 0; l < L; l++) for (let h = 0; h < H; h++) {
      const off = (l * H + h) * s1 * s2;
      for (let i = 0; i < s1; i++) for (let j = 0; j < s2; j++) {
        const v = state.heads.has(h) ? th[off + i * s2 + j] : 0;
        for (let a = 0; a < k; a++) for (let c = 0; c < k; c++) shade(img, ((i * k + a) * s2 * k + j * k + c) * 4, v);
      }
      ctx.putImageData(img, left + h * cw + 4, top + l * ch + 4);
      if (l === state.layer && state.heads.has(h)) {
        ctx.strokeStyle = color(h); ctx.lineWidth = 2;
        ctx.strokeRect(left + h * cw + 2, top + l * ch + 2, cw - 4, ch - 4);
      }
    }
  }

  let pending = Promise.resolve();
  function draw() {
    pending = pending.then(render).catch(fail);
    return pending;
  }
  async function render() {
    const t = performance.now();
    for (const b of document.querySelectorAll("nav button")) b.classList.toggle("active", b.dataset.view === state.view);
    layerSel.value = String(state.layer);
    document.getElementById("ak-hint").textContent = HINTS[state.view];
    if (state.view === "model") drawModel(await thumbData(state.group));
    else {
      const w = await layerData(state.group, state.layer);
      if (state.view === "matrix") drawMatrix(w); else drawHead(w);
    }
    ctx.getImageData(0, 0, 1, 1); // the canvas records draw calls; reading a pixel makes it rasterise them now
    draws += 1;
    root.dataset.view = state.view;
    root.dataset.group = G().name;
    root.dataset.layer = String(state.layer);
    root.dataset.heads = [...state.heads].sort((a, b) => a - b).join(",");
    root.dataset.draws = String(draws);
    root.dataset.lastDrawMs = (performance.now() - t).toFixed(1);
  }
  function fail(e) {
    const p = document.getElementById("ak-error");
    p.textContent = "The viewer could not draw: " + e;
    console.error(e);
  }
  const HINTS = {
    head: "Lines join each query token (left) to the tokens it attends to (right), one colour per head, opacity = weight; " +
          "weights under 1% are not drawn. Hover a token on the left to see its row alone. Long inputs open with one head shown.",
    model: "Every layer (rows) and head (columns) of the chosen attention: each matrix max-pooled to at most 64 x 64. Click one to open it.",
    matrix: "The weights of the chosen layer, averaged over the shown heads: rows are queries, columns keys; darker = more weight.",
  };

  canvas.addEventListener("mousemove", (e) => {
    if (state.view !== "head" || !headGeom) return;
    const r = canvas.getBoundingClientRect(), x = e.clientX - r.left, y = e.clientY - r.top;
    const i = x <= headGeom.colQ ? Math.floor((y - headGeom.top) / headGeom.rowH) : -1;
    const hover = i >= 0 && i < headGeom.tq ? i : -1;
    if (hover !== state.hover) { state.hover = hover; draw(); }
  });
  canvas.addEventListener("mouseleave", () => { if (state.hover >= 0) { state.hover = -1; draw(); } });
  canvas.addEventListener("click", (e) => {
    if (state.view !== "model" || !modelGeom) return;
    const r = canvas.getBoundingClientRect(), m = modelGeom;
    const h = Math.floor((e.clientX - r.left - m.left) / m.cw), l = Math.floor((e.clientY - r.top - m.top) / m.ch);
    if (h < 0 || h >= m.H || l < 0 || l >= m.L) return;
    state.layer = l; state.heads = new Set([h]); state.view = "matrix";
    syncHeads(); draw();
  });

  setGroup(0);
  draw().then(() => {
    root.dataset.firstDrawMs = (performance.now() - T0).toFixed(1);
    root.dataset.scriptStartMs = T0.toFixed(1);
    root.dataset.ready = "1";
  });
})();
"""

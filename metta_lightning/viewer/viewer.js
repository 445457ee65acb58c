// MettaGrid replay viewer: self-contained, no dependencies, no build step.
// Loads a replay (`*.json.z`: zlib-compressed JSON, or plain JSON) from `?replay=<url>`, from the list
// the local server offers (`/api/replays`), or from a file picked by the user, and draws it on a canvas.
// Replay format (GAME.md): every object field is a constant or a change list [[step, value], ...].
// State for scripts and tests: `window.viewer` (loaded, step, maxSteps, error, agents(), ...).
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const canvas = $("map"), ctx = canvas.getContext("2d");
  const ORIENT = ["north", "south", "west", "east"];
  const ORIENT_VEC = [[0, -1], [0, 1], [-1, 0], [1, 0]];  // dx, dy per orientation id
  const FLOOR = "#e9e4d8", GRIDLINE = "#dcd6c8", WALL = "#3b3f46", BLOCK = "#7a6a55";
  const AGENT_COLORS = ["#d62728", "#1f77b4", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#e377c2", "#8c564b",
    "#bcbd22", "#7f7f7f", "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd"];
  // Converters: fill colour and letter by type name (unknown types get a grey box with their initial).
  const OBJECT_STYLE = {
    altar: ["#c2185b", "\u2665"], mine_red: ["#b0413e", "M"], mine_blue: ["#3e64b0", "M"], mine_green: ["#3e9b4f", "M"],
    generator_red: ["#e08a2c", "G"], generator_blue: ["#2c8ae0", "G"], generator_green: ["#5ac05a", "G"],
    lasery: ["#7e57c2", "L"], armory: ["#607d8b", "A"],
  };
  const LIST_FIELDS = new Set(["location", "inventory"]);

  const state = {
    replay: null, objects: [], agents: [], staticObjects: [], step: 0, maxSteps: 0, playing: false,
    speed: 10, cell: 12, selected: null, hover: null, error: null, loaded: false, source: null,
    staticCanvas: null, lastTick: 0, acc: 0,
  };

  // ------------------------------------------------------------------------------------------ format

  function isChangeList(key, v) {
    if (!Array.isArray(v) || v.length === 0) return false;
    const first = v[0];
    if (!Array.isArray(first) || first.length !== 2 || typeof first[0] !== "number") return false;
    if (LIST_FIELDS.has(key)) return Array.isArray(first[1]);
    return true;  // scalar or dict fields are never arrays when constant
  }

  // Each field becomes {steps: Int32Array, values: [...]} (a constant has one entry at step -inf).
  function normalizeObject(raw) {
    const obj = { fields: {}, dynamic: false };
    for (const [key, v] of Object.entries(raw)) {
      if (isChangeList(key, v)) {
        obj.fields[key] = { steps: Int32Array.from(v.map((c) => c[0])), values: v.map((c) => c[1]) };
        if (v.length > 1) obj.dynamic = true;
      } else {
        obj.fields[key] = { steps: Int32Array.of(-2147483648), values: [v] };
      }
    }
    obj.id = get(obj, "id", 0);
    obj.typeName = get(obj, "type_name", 0) || "";
    obj.isAgent = obj.typeName === "agent" || obj.fields.agent_id !== undefined;
    obj.agentId = obj.isAgent ? get(obj, "agent_id", 0) : null;
    return obj;
  }

  function get(obj, key, step) {
    const f = obj.fields[key];
    if (!f) return undefined;
    const s = f.steps;
    let lo = 0, hi = s.length - 1;
    if (step < s[0]) return f.values[0];
    while (lo < hi) {  // last index with s[i] <= step
      const mid = (lo + hi + 1) >> 1;
      if (s[mid] <= step) lo = mid; else hi = mid - 1;
    }
    return f.values[lo];
  }

  function validate(r) {
    const need = ["map_size", "objects", "max_steps"];
    for (const k of need) if (!(k in r)) throw new Error(`not a MettaGrid replay: missing "${k}"`);
    if (!Array.isArray(r.map_size) || r.map_size.length !== 2) throw new Error("bad map_size");
    if (!Array.isArray(r.objects)) throw new Error("bad objects");
  }

  async function decode(buf) {
    const bytes = new Uint8Array(buf);
    let text;
    if (bytes.length && (bytes[0] === 0x7b || bytes[0] === 0x20 || bytes[0] === 0x0a)) {  // plain JSON
      text = new TextDecoder().decode(bytes);
    } else {
      const fmt = bytes[0] === 0x1f && bytes[1] === 0x8b ? "gzip" : "deflate";  // zlib = "deflate"
      try {
        const stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream(fmt));
        text = await new Response(stream).text();
      } catch (e) {
        throw new Error(`cannot decompress the replay (${fmt}): the file is corrupt or not a replay`);
      }
    }
    try {
      return JSON.parse(text);
    } catch (e) {
      throw new Error(`the replay is not valid JSON: ${e.message}`);
    }
  }

  // ------------------------------------------------------------------------------------------ loading

  function setStatus(msg, isError) {
    const el = $("status");
    el.textContent = msg;
    el.classList.toggle("error", !!isError);
  }

  function fail(msg) {
    state.error = msg;
    state.loaded = false;
    document.body.dataset.state = "error";
    setStatus(msg, true);
  }

  async function loadUrl(url, name) {
    setStatus(`loading ${url} ...`);
    document.body.dataset.state = "loading";
    let resp;
    try {
      resp = await fetch(url);
    } catch (e) {
      return fail(`cannot fetch ${url}: ${e.message}`);
    }
    if (!resp.ok) {
      let detail = "";
      try { detail = (await resp.text()).slice(0, 300); } catch (e) { /* ignore */ }
      return fail(`cannot load ${url}: HTTP ${resp.status} ${detail}`);
    }
    await loadBuffer(await resp.arrayBuffer(), name || (state.names && state.names[url]) || url);
  }

  async function loadBuffer(buf, source) {
    let r;
    try {
      r = await decode(buf);
      validate(r);
    } catch (e) {
      return fail(`${source}: ${e.message}`);
    }
    setReplay(r, source);
  }

  function setReplay(r, source) {
    state.replay = r;
    state.source = source;
    state.objects = r.objects.map(normalizeObject);
    state.agents = state.objects.filter((o) => o.isAgent).sort((a, b) => a.agentId - b.agentId);
    state.staticObjects = state.objects.filter((o) => !o.dynamic && !o.isAgent);
    state.maxSteps = r.max_steps | 0;
    state.step = 0;
    state.error = null;
    state.selected = state.agents.length ? state.agents[0] : null;
    state.itemNames = r.item_names || [];
    state.actionNames = r.action_names || [];
    const slider = $("step");
    slider.max = String(state.maxSteps);
    slider.value = "0";
    const [w, h] = r.map_size;
    $("title").textContent = `${source.split("/").pop().split("?")[0]}  ${w}x${h}, ${state.agents.length} agents, ` +
      `${state.maxSteps} steps` + (r.episode !== undefined ? `, episode ${r.episode}` : "");
    fitZoom();
    buildLegend();
    buildAgentTable();
    state.loaded = true;
    document.body.dataset.state = "loaded";
    setStatus("");
    render();
  }

  // ------------------------------------------------------------------------------------------ drawing

  function agentColor(agentId) { return AGENT_COLORS[agentId % AGENT_COLORS.length]; }

  function resize() {
    const [w, h] = state.replay.map_size;
    canvas.width = w * state.cell;
    canvas.height = h * state.cell;
    state.staticCanvas = null;
  }

  function fitZoom() {
    if (!state.replay) return;
    const wrap = $("canvas-wrap");
    const [w, h] = state.replay.map_size;
    const cell = Math.max(4, Math.min(48, Math.floor(Math.min((wrap.clientWidth - 4) / w, (wrap.clientHeight - 4) / h))));
    state.cell = Number.isFinite(cell) ? cell : 12;
    $("zoom").value = String(state.cell);
    resize();
  }

  function drawStatic() {
    const [w, h] = state.replay.map_size, c = state.cell;
    const off = document.createElement("canvas");
    off.width = canvas.width; off.height = canvas.height;
    const g = off.getContext("2d");
    g.fillStyle = FLOOR;
    g.fillRect(0, 0, off.width, off.height);
    if (c >= 8) {
      g.strokeStyle = GRIDLINE; g.lineWidth = 1; g.beginPath();
      for (let x = 0; x <= w; x++) { g.moveTo(x * c + 0.5, 0); g.lineTo(x * c + 0.5, h * c); }
      for (let y = 0; y <= h; y++) { g.moveTo(0, y * c + 0.5); g.lineTo(w * c, y * c + 0.5); }
      g.stroke();
    }
    for (const o of state.staticObjects) drawObject(g, o, 0);
    state.staticCanvas = off;
  }

  function drawObject(g, o, step) {
    const c = state.cell;
    const loc = get(o, "location", step);
    if (!loc) return;
    const x = loc[0] * c, y = loc[1] * c;
    const name = o.typeName;
    if (name === "wall" || name === "block") {
      g.fillStyle = name === "wall" ? WALL : BLOCK;
      g.fillRect(x, y, c, c);
      return;
    }
    const [fill, letter] = OBJECT_STYLE[name] || ["#888", (name[0] || "?").toUpperCase()];
    const cooling = get(o, "cooling_down", step), converting = get(o, "converting", step);
    const pad = Math.max(1, c * 0.08);
    g.globalAlpha = cooling ? 0.5 : 1;
    g.fillStyle = fill;
    g.fillRect(x + pad, y + pad, c - 2 * pad, c - 2 * pad);
    g.globalAlpha = 1;
    if (converting) {
      g.strokeStyle = "#fff59d"; g.lineWidth = Math.max(1, c * 0.1);
      g.strokeRect(x + pad, y + pad, c - 2 * pad, c - 2 * pad);
    }
    if (c >= 10) {
      g.fillStyle = "#fff";
      g.font = `bold ${Math.floor(c * 0.6)}px sans-serif`;
      g.textAlign = "center"; g.textBaseline = "middle";
      g.fillText(letter, x + c / 2, y + c / 2 + 1);
    }
    const inv = get(o, "inventory", step) || [];
    const n = inv.reduce((s, p) => s + p[1], 0);
    if (n > 0 && c >= 8) {  // output count in the corner
      g.fillStyle = "#111"; g.font = `${Math.max(8, Math.floor(c * 0.4))}px sans-serif`;
      g.textAlign = "right"; g.textBaseline = "bottom";
      g.fillText(String(n), x + c - 1, y + c);
    }
  }

  function drawAgent(g, o, step) {
    const c = state.cell;
    const loc = get(o, "location", step);
    if (!loc) return;
    const cx = loc[0] * c + c / 2, cy = loc[1] * c + c / 2, r = c * 0.42;
    const frozen = get(o, "frozen", step) > 0;
    g.beginPath(); g.arc(cx, cy, r, 0, 2 * Math.PI);
    g.fillStyle = agentColor(o.agentId); g.fill();
    // Orientation: a white wedge pointing the way the agent faces.
    const [dx, dy] = ORIENT_VEC[get(o, "orientation", step) | 0] || [0, -1];
    const px = -dy, py = dx;
    g.beginPath();
    g.moveTo(cx + dx * r * 0.95, cy + dy * r * 0.95);
    g.lineTo(cx + dx * r * 0.35 + px * r * 0.4, cy + dy * r * 0.35 + py * r * 0.4);
    g.lineTo(cx + dx * r * 0.35 - px * r * 0.4, cy + dy * r * 0.35 - py * r * 0.4);
    g.closePath(); g.fillStyle = "#fff"; g.fill();
    if (frozen) {  // icy ring
      g.beginPath(); g.arc(cx, cy, r, 0, 2 * Math.PI);
      g.lineWidth = Math.max(2, c * 0.14); g.strokeStyle = "#7fdbff"; g.stroke();
    }
    if (state.selected === o) {
      g.beginPath(); g.arc(cx, cy, r + Math.max(2, c * 0.12), 0, 2 * Math.PI);
      g.lineWidth = 2; g.strokeStyle = "#ffeb3b"; g.stroke();
    }
    const hearts = heartCount(o, step);
    if (hearts > 0 && c >= 10) {
      g.fillStyle = "#c2185b"; g.font = `bold ${Math.max(8, Math.floor(c * 0.38))}px sans-serif`;
      g.textAlign = "left"; g.textBaseline = "top";
      g.fillText(`\u2665${hearts}`, loc[0] * c + 1, loc[1] * c);
    }
  }

  function heartCount(o, step) {
    const heartId = state.itemNames.indexOf("heart");
    const inv = get(o, "inventory", step) || [];
    for (const [item, n] of inv) if (item === heartId) return n;
    return 0;
  }

  function drawTrail(g, o, step) {
    const c = state.cell;
    g.beginPath();
    let started = false;
    for (let s = Math.max(0, step - 30); s <= step; s++) {
      const loc = get(o, "location", s);
      const x = loc[0] * c + c / 2, y = loc[1] * c + c / 2;
      if (!started) { g.moveTo(x, y); started = true; } else g.lineTo(x, y);
    }
    g.strokeStyle = "rgba(255, 235, 59, 0.7)"; g.lineWidth = Math.max(1, c * 0.12); g.stroke();
  }

  function render() {
    if (!state.replay) return;
    const step = state.step;
    if (!state.staticCanvas) drawStatic();
    ctx.drawImage(state.staticCanvas, 0, 0);
    for (const o of state.objects) if (o.dynamic && !o.isAgent) drawObject(ctx, o, step);
    if (state.selected && state.selected.isAgent) drawTrail(ctx, state.selected, step);
    for (const o of state.agents) drawAgent(ctx, o, step);
    $("step").value = String(step);
    $("step-label").textContent = `step ${step} / ${state.maxSteps}`;
    updatePanel();
    updateAgentTable();
    if (state.hover) showTooltip(state.hover.obj, state.hover.x, state.hover.y);
  }

  // ------------------------------------------------------------------------------------------ panels

  const itemName = (i) => state.itemNames[i] !== undefined ? state.itemNames[i] : `item${i}`;
  const actionName = (a) => state.actionNames[a] !== undefined ? state.actionNames[a] : `action${a}`;
  const fmt = (x) => (typeof x === "number" ? (Number.isInteger(x) ? String(x) : x.toFixed(3)) : String(x));
  const esc = (s) => String(s).replace(/[&<>"]/g, (ch) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" }[ch]));

  function describe(o, step) {
    const loc = get(o, "location", step) || [];
    const lines = [];
    if (o.isAgent) {
      lines.push([`agent ${o.agentId}`, `(col ${loc[0]}, row ${loc[1]})`]);
      lines.push(["facing", ORIENT[get(o, "orientation", step)] || "?"]);
      const ok = get(o, "action_success", step);
      lines.push(["action", `${actionName(get(o, "action", step))} ${ok ? "\u2713" : "\u2717"}`]);
      lines.push(["frozen", fmt(get(o, "frozen", step) || 0)]);
      lines.push(["reward (step)", fmt(get(o, "current_reward", step) || 0)]);
      lines.push(["reward (total)", fmt(get(o, "total_reward", step) || 0)]);
      lines.push(["group", fmt(get(o, "group", step) || 0)]);
    } else {
      lines.push([o.typeName, `(col ${loc[0]}, row ${loc[1]})`]);
      const recipe = get(o, "recipe", step);
      if (recipe) {
        const side = (l) => (l || []).map(([i, n]) => `${n} ${itemName(i)}`).join(" + ") || "nothing";
        lines.push(["recipe", `${side(recipe.inputs)} -> ${side(recipe.outputs)}`]);
        lines.push(["converting", String(!!get(o, "converting", step))]);
        lines.push(["cooling down", String(!!get(o, "cooling_down", step))]);
      }
    }
    const inv = get(o, "inventory", step) || [];
    lines.push(["inventory", inv.length ? "" : "empty"]);
    for (const [i, n] of inv) lines.push([`  ${itemName(i)}`, String(n)]);
    return lines;
  }

  function showTooltip(o, x, y) {
    const tip = $("tooltip");
    tip.textContent = describe(o, state.step).map(([k, v]) => `${k}  ${v}`).join("\n");
    tip.hidden = false;
    const stage = $("stage").getBoundingClientRect();
    tip.style.left = `${Math.min(x + 14, stage.width - 220)}px`;
    tip.style.top = `${Math.min(y + 14, stage.height - 160)}px`;
  }

  function updatePanel() {
    const o = state.selected, el = $("selected");
    if (!o) { el.innerHTML = '<p class="hint">Click an agent or object.</p>'; return; }
    const rows = describe(o, state.step).map(([k, v]) => `<tr><td>${esc(k)}</td><td>${esc(v)}</td></tr>`).join("");
    let html = `<table>${rows}</table>`;
    if (o.isAgent) {
      const recent = [];
      for (let s = state.step; s >= Math.max(1, state.step - 40); s--) {
        const ok = get(o, "action_success", s), r = get(o, "current_reward", s) || 0;
        recent.push(`<div><span class="hint">${s}</span> <span class="${ok ? "ok" : "fail"}">` +
          `${esc(actionName(get(o, "action", s)))}</span>${r ? ` <b>${esc(fmt(r))}</b>` : ""}</div>`);
      }
      html += `<h2>Recent actions</h2><div class="actions">${recent.join("")}</div>`;
    }
    el.innerHTML = html;
  }

  function buildAgentTable() {
    const body = $("agents").querySelector("tbody");
    body.innerHTML = "";
    for (const o of state.agents) {
      const tr = document.createElement("tr");
      tr.dataset.agent = String(o.agentId);
      tr.innerHTML = `<td><span class="swatch" style="background:${agentColor(o.agentId)}"></span>${o.agentId}</td>` +
        "<td></td><td></td><td></td>";
      tr.addEventListener("click", () => { state.selected = o; render(); });
      body.appendChild(tr);
      o.row = tr;
    }
  }

  function updateAgentTable() {
    for (const o of state.agents) {
      if (!o.row) continue;
      const cells = o.row.children;
      cells[1].textContent = fmt(get(o, "total_reward", state.step) || 0);
      cells[2].textContent = String(heartCount(o, state.step));
      cells[3].textContent = actionName(get(o, "action", state.step));
      o.row.classList.toggle("sel", state.selected === o);
    }
  }

  function buildLegend() {
    const present = new Set(state.objects.map((o) => o.typeName));
    const items = [];
    for (const name of present) {
      if (name === "agent") continue;
      const color = name === "wall" ? WALL : name === "block" ? BLOCK : (OBJECT_STYLE[name] || ["#888"])[0];
      items.push(`<span class="legend-item"><i style="background:${color}"></i>${esc(name)}</span>`);
    }
    items.push('<span class="legend-item"><i style="background:#7fdbff;border-radius:50%"></i>frozen agent</span>');
    items.push('<span class="legend-item"><i style="background:#fff59d"></i>converting</span>');
    $("legend").innerHTML = items.join("");
  }

  // ------------------------------------------------------------------------------------------ interaction

  function objectAt(col, row, step) {
    let found = null;
    for (const o of state.agents) {
      const l = get(o, "location", step);
      if (l && l[0] === col && l[1] === row) return o;
    }
    for (const o of state.objects) {
      if (o.isAgent) continue;
      const l = get(o, "location", step);
      if (l && l[0] === col && l[1] === row) found = o;
    }
    return found;
  }

  function cellOf(ev) {
    const rect = canvas.getBoundingClientRect();
    return [Math.floor((ev.clientX - rect.left) / state.cell), Math.floor((ev.clientY - rect.top) / state.cell)];
  }

  canvas.addEventListener("mousemove", (ev) => {
    if (!state.loaded) return;
    const [col, row] = cellOf(ev);
    const o = objectAt(col, row, state.step);
    const stage = $("stage").getBoundingClientRect();
    if (o) { state.hover = { obj: o, x: ev.clientX - stage.left, y: ev.clientY - stage.top }; showTooltip(o, state.hover.x, state.hover.y); }
    else { state.hover = null; $("tooltip").hidden = true; }
  });
  canvas.addEventListener("mouseleave", () => { state.hover = null; $("tooltip").hidden = true; });
  canvas.addEventListener("click", (ev) => {
    if (!state.loaded) return;
    const [col, row] = cellOf(ev);
    const o = objectAt(col, row, state.step);
    if (o) { state.selected = o; render(); }
  });
  canvas.addEventListener("wheel", (ev) => {
    if (!ev.ctrlKey && !ev.metaKey) return;
    ev.preventDefault();
    setZoom(state.cell + (ev.deltaY < 0 ? 2 : -2));
  }, { passive: false });

  function setStep(s) {
    state.step = Math.max(0, Math.min(state.maxSteps, s | 0));
    render();
  }

  function setZoom(c) {
    state.cell = Math.max(4, Math.min(48, c | 0));
    $("zoom").value = String(state.cell);
    if (state.replay) { resize(); render(); }
  }

  function setPlaying(p) {
    state.playing = p && state.loaded;
    $("play").innerHTML = state.playing ? "&#10074;&#10074; Pause" : "&#9654; Play";
    if (state.playing) {
      if (state.step >= state.maxSteps) setStep(0);
      state.lastTick = performance.now(); state.acc = 0;
      requestAnimationFrame(tick);
    }
  }

  function tick(now) {
    if (!state.playing) return;
    state.acc += (now - state.lastTick) / 1000 * state.speed;
    state.lastTick = now;
    const n = Math.floor(state.acc);
    if (n > 0) {
      state.acc -= n;
      setStep(state.step + n);
      if (state.step >= state.maxSteps) { setPlaying(false); return; }
    }
    requestAnimationFrame(tick);
  }

  $("step").addEventListener("input", (ev) => setStep(parseInt(ev.target.value, 10)));
  $("play").addEventListener("click", () => setPlaying(!state.playing));
  $("prev").addEventListener("click", () => setStep(state.step - 1));
  $("next").addEventListener("click", () => setStep(state.step + 1));
  $("speed").addEventListener("change", (ev) => { state.speed = parseFloat(ev.target.value); });
  $("zoom").addEventListener("input", (ev) => setZoom(parseInt(ev.target.value, 10)));
  $("fit").addEventListener("click", () => { fitZoom(); render(); });
  document.addEventListener("keydown", (ev) => {
    if (ev.target.tagName === "INPUT" && ev.target.type !== "range") return;
    if (ev.key === " ") { ev.preventDefault(); setPlaying(!state.playing); }
    else if (ev.key === "ArrowRight") { ev.preventDefault(); setStep(state.step + (ev.shiftKey ? 10 : 1)); }
    else if (ev.key === "ArrowLeft") { ev.preventDefault(); setStep(state.step - (ev.shiftKey ? 10 : 1)); }
    else if (ev.key === "Tab" && state.agents.length) {
      ev.preventDefault();
      const i = state.agents.indexOf(state.selected);
      state.selected = state.agents[(i + (ev.shiftKey ? -1 : 1) + state.agents.length) % state.agents.length];
      render();
    } else if (ev.key === "+" || ev.key === "=") setZoom(state.cell + 2);
    else if (ev.key === "-") setZoom(state.cell - 2);
  });
  $("file-input").addEventListener("change", async (ev) => {
    const f = ev.target.files[0];
    if (f) await loadBuffer(await f.arrayBuffer(), f.name);
  });
  $("replay-list").addEventListener("change", (ev) => {
    const url = new URL(location.href);
    url.searchParams.set("replay", ev.target.value);
    history.replaceState(null, "", url);
    loadUrl(ev.target.value);
  });

  async function init() {
    const params = new URLSearchParams(location.search);
    let url = params.get("replay");
    if (location.protocol.startsWith("http")) {
      try {  // the local server lists its replays
        const resp = await fetch("api/replays");
        if (resp.ok) {
          const list = await resp.json();
          state.names = Object.fromEntries(list.map((r) => [r.url, r.name]));
          const sel = $("replay-list");
          sel.innerHTML = list.map((r) => `<option value="${esc(r.url)}">${esc(r.name)}</option>`).join("");
          sel.hidden = list.length < 2;
          if (!url && list.length) url = list[0].url;
          if (url) sel.value = url;
        }
      } catch (e) { /* not our server: fine */ }
    }
    if (url) await loadUrl(url);
    else setStatus("open a replay file (*.json.z)");
  }

  window.viewer = {
    get loaded() { return state.loaded; },
    get error() { return state.error; },
    get step() { return state.step; },
    get maxSteps() { return state.maxSteps; },
    get cell() { return state.cell; },
    get selectedAgent() { return state.selected && state.selected.isAgent ? state.selected.agentId : null; },
    get mapSize() { return state.replay ? state.replay.map_size : null; },
    agents() {
      return state.agents.map((o) => ({
        id: o.agentId, location: get(o, "location", state.step), orientation: get(o, "orientation", state.step),
        frozen: get(o, "frozen", state.step), inventory: get(o, "inventory", state.step),
        total_reward: get(o, "total_reward", state.step), color: agentColor(o.agentId),
      }));
    },
    setStep, setZoom, setPlaying, loadUrl, loadBuffer, select(agentId) {
      state.selected = state.agents.find((o) => o.agentId === agentId) || null; render();
    },
  };
  window.addEventListener("resize", () => { if (state.replay) render(); });
  init();
})();

// MettaGrid viewer: replays and live play. Self-contained, no dependencies, no build step.
// Replay mode: loads a replay (`*.json.z`: zlib-compressed JSON, or plain JSON) from `?replay=<url>`, from
// the list the local server offers (`api/replays`), or from a file picked by the user.
// Play mode (the `play` server answers `api/info` with mode "play"): the episode so far comes from
// `api/play/replay`; each key press posts an action to `api/play/step` and the answer (what changed at the
// new step) is appended to the replay held here, so the same drawing code serves both modes.
// Replay format (GAME.md): every object field is a constant or a change list [[step, value], ...].
// State for scripts and tests: `window.viewer` (loaded, step, maxSteps, error, agents(), cellCenter(), ...).
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const canvas = $("map"), ctx = canvas.getContext("2d");
  const tl = $("timeline"), tctx = tl.getContext("2d");
  const ORIENT = ["north", "south", "west", "east"];
  const ORIENT_VEC = [[0, -1], [0, 1], [-1, 0], [1, 0]];  // dx, dy per orientation id
  const FLOOR = "#e9e4d8", GRIDLINE = "#dcd6c8", OUTSIDE = "#121417";
  const WALL_TOP = "#5b616b", WALL_FACE = "#3b3f46", WALL_EDGE = "#2a2d33", BLOCK = "#8a7658";
  // Team (group) ring colours; only drawn when a replay has more than one team or policy.
  // (no light blue: that ring means frozen)
  const TEAM_COLORS = ["#ffd866", "#ff6188", "#a9dc76", "#fc9867", "#ab9df2", "#ffffff", "#000000", "#9e9e9e"];
  // Converters: fill colour and letter by type name (unknown types get a grey box with their initial).
  const OBJECT_STYLE = {
    altar: ["#c2185b", "\u2665"], mine_red: ["#b0413e", "M"], mine_blue: ["#3e64b0", "M"], mine_green: ["#3e9b4f", "M"],
    generator_red: ["#e08a2c", "G"], generator_blue: ["#2c8ae0", "G"], generator_green: ["#5ac05a", "G"],
    lasery: ["#7e57c2", "L"], armory: ["#607d8b", "A"],
  };
  const EVENT_COLORS = { heart: "#ff4f9a", attack: "#ff5b45", freeze: "#7fdbff" };
  const LIST_FIELDS = new Set(["location", "inventory"]);
  const MIN_CELL = 2, MAX_CELL = 96;

  const state = {
    replay: null, objects: [], byId: new Map(), agents: [], step: 0, maxSteps: 0, playing: false,
    speed: 10, cell: 12, ox: 0, oy: 0, selected: null, hover: null, error: null, loaded: false, source: null,
    lastTick: 0, acc: 0, itemNames: [], actionNames: [], walls: new Set(), events: [], teams: [],
    meta: {}, uris: {}, names: {}, dpr: 1, drag: null,
    // play mode
    live: null, pending: 0, queue: [], controlled: null, realtime: false, runPaused: false, rtTimer: null,
    queuedAction: null, follow: true, lastResponse: null, showView: false,
  };

  // ------------------------------------------------------------------------------------------ format

  function isChangeList(key, v) {
    if (!Array.isArray(v) || v.length === 0) return false;
    const first = v[0];
    if (!Array.isArray(first) || first.length !== 2 || typeof first[0] !== "number") return false;
    if (LIST_FIELDS.has(key)) return Array.isArray(first[1]);
    return true;  // scalar or dict fields are never arrays when constant
  }

  // Each field becomes {steps: [...], values: [...]} (a constant has one entry at step -inf). Plain arrays,
  // so that play mode can append to them.
  function normalizeObject(raw) {
    const obj = { fields: {} };
    for (const [key, v] of Object.entries(raw)) {
      if (isChangeList(key, v)) obj.fields[key] = { steps: v.map((c) => c[0]), values: v.map((c) => c[1]) };
      else obj.fields[key] = { steps: [-Infinity], values: [v] };
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
    if (step < s[0]) return f.values[0];
    let lo = 0, hi = s.length - 1;
    while (lo < hi) {  // last index with s[i] <= step
      const mid = (lo + hi + 1) >> 1;
      if (s[mid] <= step) lo = mid; else hi = mid - 1;
    }
    return f.values[lo];
  }

  function setField(obj, key, step, value) {
    const f = obj.fields[key];
    if (!f) { obj.fields[key] = { steps: [step], values: [value] }; return; }
    const last = f.steps.length - 1;
    if (f.steps[last] === step) f.values[last] = value;
    else { f.steps.push(step); f.values.push(value); }
  }

  function validate(r) {
    if (r === null || typeof r !== "object" || Array.isArray(r)) throw new Error("not a MettaGrid replay: not a JSON object");
    for (const k of ["map_size", "objects", "max_steps"]) if (!(k in r)) throw new Error(`not a MettaGrid replay: missing "${k}"`);
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
    await loadBuffer(await resp.arrayBuffer(), name || state.names[url] || url, state.uris[url] || url);
  }

  async function loadBuffer(buf, source, uri) {
    let r;
    try {
      r = await decode(buf);
      validate(r);
    } catch (e) {
      return fail(`${source}: ${e.message}`);
    }
    setReplay(r, source, uri || source);
  }

  // Policy and simulation: from the replay's metadata, else from an evaluation replay's path
  // (`<replays>/<policy>/v<N>/<suite>/<simulation>/game<G>_episode<E>.json.z`).
  function describeSource(r, uri) {
    const meta = Object.assign({}, r.metadata || {});
    const decode = (p) => { try { return decodeURIComponent(p); } catch (e) { return p; } };
    const parts = String(uri || "").split("?")[0].split("/").filter(Boolean).map(decode);
    const n = parts.length;
    if (n >= 5 && /^v\d+$/.test(parts[n - 4])) {
      if (!meta.policy) meta.policy = `${parts[n - 5]}:${parts[n - 4]}`;
      if (!meta.simulation) meta.simulation = `${parts[n - 3]}/${parts[n - 2]}`;
    }
    return meta;
  }

  function setReplay(r, source, uri, keepView) {
    const prevSelected = state.selected ? state.selected.id : null;
    state.replay = r;
    state.source = source;
    state.objects = r.objects.map(normalizeObject);
    state.byId = new Map(state.objects.map((o) => [o.id, o]));
    state.agents = state.objects.filter((o) => o.isAgent).sort((a, b) => a.agentId - b.agentId);
    state.maxSteps = r.max_steps | 0;
    state.error = null;
    state.itemNames = r.item_names || [];
    state.actionNames = r.action_names || [];
    state.meta = describeSource(r, uri);
    state.walls = new Set();
    for (const o of state.objects) {
      if (o.typeName === "wall" && o.fields.location.steps.length === 1) {
        const l = get(o, "location", 0);
        state.walls.add(l[0] + "," + l[1]);
      }
    }
    const groups = new Set(state.agents.map((o) => get(o, "group", 0) || 0));
    const policies = state.meta.agent_policies ? new Set(state.meta.agent_policies) : new Set();
    state.teams = groups.size > 1 || policies.size > 1;
    state.selected = (keepView && state.byId.get(prevSelected)) || (state.agents.length ? state.agents[0] : null);
    if (state.live) {
      state.controlled = state.agents.find((o) => o.agentId === state.live.agent) || null;
      if (!keepView) state.selected = state.controlled || state.selected;
    }
    state.step = state.live ? state.maxSteps : (keepView ? Math.min(state.step, state.maxSteps) : 0);
    $("step").max = String(state.maxSteps);
    computeEvents(1, state.maxSteps, true);
    updateTitle();
    if (!keepView) fitZoom();
    buildLegend();
    buildAgentTable();
    state.loaded = true;
    document.body.dataset.state = "loaded";
    if (!state.live) setStatus(r.complete === false ? "episode saved before its end" : "");
    render();
  }

  function updateTitle() {
    const r = state.replay, m = state.meta;
    const [w, h] = r.map_size;
    const parts = [];
    parts.push(m.policy ? `policy ${m.policy}` : state.live ? "no policy" : source_name());
    if (m.simulation) parts.push(m.simulation);
    if (r.episode !== undefined) parts.push(`episode ${r.episode}`);
    const text = parts.join(" \u00b7 ");
    $("title").textContent = `${text}   (${w}x${h}, ${state.agents.length} agents)`;
    document.title = `${state.live ? "Play" : "Replay"}: ${text}`;
    state.titleText = text;
  }

  function source_name() { return String(state.source || "").split("/").pop().split("?")[0]; }

  // ------------------------------------------------------------------------------------------ events

  // Per step: hearts made (an agent's heart count rises), successful attacks, agents freezing, reward sum.
  function eventsAt(s) {
    const ev = { step: s, heart: 0, attack: 0, freeze: 0, reward: 0, who: [] };
    const heartId = state.itemNames.indexOf("heart");
    for (const o of state.agents) {
      const r = get(o, "current_reward", s) || 0;
      ev.reward += r;
      if (heartId >= 0 && countOf(get(o, "inventory", s), heartId) > countOf(get(o, "inventory", s - 1), heartId)) {
        ev.heart++; ev.who.push(`agent ${o.agentId} +\u2665`);
      }
      const a = get(o, "action", s), name = state.actionNames[a] || "";
      if (name.startsWith("attack") && get(o, "action_success", s) && changedAt(o, s)) {
        ev.attack++; ev.who.push(`agent ${o.agentId} attacks`);
      }
      if ((get(o, "frozen", s) || 0) > 0 && !((get(o, "frozen", s - 1) || 0) > 0)) {
        ev.freeze++; ev.who.push(`agent ${o.agentId} frozen`);
      }
    }
    return ev;
  }

  // An action field only changes when the action does: a repeated attack shows as a new step of the agent's
  // `action_success`/`action` lists or, if both repeat, as a change of its inventory or of someone's frozen.
  function changedAt(o, s) {
    for (const k of ["action", "action_success", "inventory", "location", "orientation"]) {
      const f = o.fields[k];
      if (f && f.steps.includes(s)) return true;
    }
    return state.agents.some((x) => x !== o && (get(x, "frozen", s) || 0) > 0 && !((get(x, "frozen", s - 1) || 0) > 0));
  }

  function countOf(inv, item) {
    for (const [i, n] of inv || []) if (i === item) return n;
    return 0;
  }

  function computeEvents(from, to, reset) {
    if (reset) state.events = [null];
    for (let s = from; s <= to; s++) state.events[s] = eventsAt(s);
    drawTimeline();
  }

  function drawTimeline() {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(10, Math.floor(tl.clientWidth * dpr)), h = Math.floor(46 * dpr);
    if (tl.width !== w || tl.height !== h) { tl.width = w; tl.height = h; }
    tctx.setTransform(1, 0, 0, 1, 0, 0);
    tctx.fillStyle = "#1a1d22"; tctx.fillRect(0, 0, w, h);
    const n = Math.max(1, state.maxSteps);
    const x = (s) => (s / n) * (w - 2) + 1;
    const evs = state.events;
    // reward per step as bars (positive up, negative down) around a baseline
    let maxR = 1e-9;
    for (let s = 1; s < evs.length; s++) if (evs[s]) maxR = Math.max(maxR, Math.abs(evs[s].reward));
    const base = h * 0.45, scale = (h * 0.4) / maxR;
    tctx.fillStyle = "#56d364";
    for (let s = 1; s < evs.length; s++) {
      const e = evs[s];
      if (!e || !e.reward) continue;
      const bh = Math.max(1, Math.abs(e.reward) * scale);
      tctx.fillStyle = e.reward > 0 ? "#56d364" : "#f85149";
      tctx.fillRect(x(s) - 0.5, e.reward > 0 ? base - bh : base, Math.max(1, w / n), bh);
    }
    tctx.fillStyle = "#30363d"; tctx.fillRect(0, base, w, 1);
    // event ticks: hearts, attacks, freezes in three rows at the bottom
    const row = 5 * dpr, tw = Math.max(3 * dpr, (w / n) * 0.7);
    const rows = { heart: h - 3 * row - 2 * dpr, attack: h - 2 * row - dpr, freeze: h - row };
    for (const kind of ["freeze", "attack", "heart"]) {
      tctx.fillStyle = EVENT_COLORS[kind];
      for (let s = 1; s < evs.length; s++) {
        const e = evs[s];
        if (e && e[kind]) tctx.fillRect(x(s) - tw / 2, rows[kind], tw, row);
      }
    }
    tctx.fillStyle = "#ffeb3b";
    tctx.fillRect(x(state.step) - dpr, 0, 2 * dpr, h);
  }

  function timelineStep(ev) {
    const rect = tl.getBoundingClientRect();
    return Math.round(((ev.clientX - rect.left) / Math.max(1, rect.width)) * state.maxSteps);
  }

  // ------------------------------------------------------------------------------------------ view

  function agentColor(agentId) {
    // 137.5 degrees apart: neighbouring ids differ most; lightness alternates for ids a full turn apart
    const hue = (agentId * 137.508) % 360, light = [48, 62, 38][Math.floor(agentId / 8) % 3];
    return hslToHex(hue, 70, light);
  }

  function hslToHex(h, s, l) {
    s /= 100; l /= 100;
    const k = (n) => (n + h / 30) % 12, a = s * Math.min(l, 1 - l);
    const f = (n) => Math.round(255 * (l - a * Math.max(-1, Math.min(k(n) - 3, Math.min(9 - k(n), 1)))));
    return "#" + [f(0), f(8), f(4)].map((v) => v.toString(16).padStart(2, "0")).join("");
  }

  function teamOf(o) {
    const pol = state.meta.agent_policies;
    if (pol && pol[o.agentId] !== undefined) return String(pol[o.agentId]);
    return `team ${get(o, "group", state.step) || 0}`;
  }

  function teamColor(o) {
    const pol = state.meta.agent_policies;
    if (pol) {
      const names = [...new Set(pol)];
      return TEAM_COLORS[Math.max(0, names.indexOf(pol[o.agentId])) % TEAM_COLORS.length];
    }
    return TEAM_COLORS[(get(o, "group", state.step) || 0) % TEAM_COLORS.length];
  }

  function resizeCanvas() {
    const dpr = window.devicePixelRatio || 1;
    const w = Math.max(1, Math.floor(canvas.clientWidth * dpr)), h = Math.max(1, Math.floor(canvas.clientHeight * dpr));
    if (canvas.width !== w || canvas.height !== h) { canvas.width = w; canvas.height = h; }
    state.dpr = dpr;
  }

  // The whole map, centred.
  function fitZoom() {
    if (!state.replay) return;
    resizeCanvas();
    const [w, h] = state.replay.map_size;
    const cell = Math.min((canvas.width - 8) / w, (canvas.height - 8) / h);
    state.cell = Math.max(MIN_CELL, Math.min(MAX_CELL, Number.isFinite(cell) && cell > 0 ? cell : 12));
    state.ox = (canvas.width - w * state.cell) / 2;
    state.oy = (canvas.height - h * state.cell) / 2;
    $("zoom").value = String(Math.round(state.cell));
  }

  // Zoom to `cell` keeping the map point under canvas pixel (px, py) where it is.
  function zoomAt(cell, px, py) {
    cell = Math.max(MIN_CELL, Math.min(MAX_CELL, cell));
    const mx = (px - state.ox) / state.cell, my = (py - state.oy) / state.cell;
    state.cell = cell;
    state.ox = px - mx * cell;
    state.oy = py - my * cell;
    $("zoom").value = String(Math.round(cell));
    render();
  }

  function setZoom(c) { zoomAt(c, canvas.width / 2, canvas.height / 2); }

  function centerOn(col, row) {
    state.ox = canvas.width / 2 - (col + 0.5) * state.cell;
    state.oy = canvas.height / 2 - (row + 0.5) * state.cell;
    render();
  }

  // ------------------------------------------------------------------------------------------ drawing

  function drawFloorAndWalls(g, c, x0, y0, x1, y1) {
    const [w, h] = state.replay.map_size;
    g.fillStyle = OUTSIDE; g.fillRect(0, 0, canvas.width, canvas.height);
    g.fillStyle = FLOOR; g.fillRect(state.ox, state.oy, w * c, h * c);
    if (c >= 8) {
      g.strokeStyle = GRIDLINE; g.lineWidth = 1; g.beginPath();
      for (let x = Math.max(1, x0); x <= Math.min(w - 1, x1 + 1); x++) { const px = Math.round(state.ox + x * c) + 0.5; g.moveTo(px, state.oy + y0 * c); g.lineTo(px, state.oy + (y1 + 1) * c); }
      for (let y = Math.max(1, y0); y <= Math.min(h - 1, y1 + 1); y++) { const py = Math.round(state.oy + y * c) + 0.5; g.moveTo(state.ox + x0 * c, py); g.lineTo(state.ox + (x1 + 1) * c, py); }
      g.stroke();
    }
  }

  // Walls as raised blocks: a lighter top, a darker face where the cell below is open, edges where a
  // neighbour is open; joined walls read as one mass and the border as the map's rim.
  function drawWall(g, col, row, c, swappable) {
    const x = state.ox + col * c, y = state.oy + row * c;
    const open = (dc, dr) => !state.walls.has((col + dc) + "," + (row + dr));
    const face = open(0, 1) ? Math.max(1, c * 0.28) : 0;
    g.fillStyle = swappable ? BLOCK : WALL_TOP;
    g.fillRect(x, y, c + 0.5, c + 0.5);
    if (face) { g.fillStyle = swappable ? "#5e4f3a" : WALL_FACE; g.fillRect(x, y + c - face, c + 0.5, face + 0.5); }
    if (c >= 6) {
      g.fillStyle = WALL_EDGE;
      const e = Math.max(1, c * 0.06);
      if (open(0, -1)) g.fillRect(x, y, c, e);
      if (open(-1, 0)) g.fillRect(x, y, e, c);
      if (open(1, 0)) g.fillRect(x + c - e, y, e, c);
      if (c >= 14 && !swappable) {  // a few mortar lines
        g.fillStyle = "rgba(0,0,0,0.18)";
        const top = c - face;
        g.fillRect(x, y + top * 0.5, c, 1);
        g.fillRect(x + c * ((row % 2) ? 0.3 : 0.7), y, 1, top * 0.5);
        g.fillRect(x + c * ((row % 2) ? 0.7 : 0.3), y + top * 0.5, 1, top * 0.5);
      }
    }
  }

  function drawConverter(g, o, step, c) {
    const loc = get(o, "location", step);
    if (!loc) return;
    const x = state.ox + loc[0] * c, y = state.oy + loc[1] * c;
    const [fill, letter] = OBJECT_STYLE[o.typeName] || ["#888", (o.typeName[0] || "?").toUpperCase()];
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
      g.font = `bold ${Math.floor(c * 0.55)}px sans-serif`;
      g.textAlign = "center"; g.textBaseline = "middle";
      g.fillText(letter, x + c / 2, y + c / 2 + 1);
    }
    const inv = get(o, "inventory", step) || [];
    if (inv.length && c >= 12) drawInventoryIcons(g, inv, x, y, c, true);
  }

  function drawAgent(g, o, step, c) {
    const loc = get(o, "location", step);
    if (!loc) return;
    const cx = state.ox + loc[0] * c + c / 2, cy = state.oy + loc[1] * c + c / 2, r = c * 0.4;
    const frozen = get(o, "frozen", step) > 0;
    g.beginPath(); g.arc(cx, cy, r, 0, 2 * Math.PI);
    g.fillStyle = agentColor(o.agentId); g.fill();
    if (state.teams && c >= 6) {  // team / policy ring
      g.beginPath(); g.arc(cx, cy, r - Math.max(1, c * 0.04), 0, 2 * Math.PI);
      g.lineWidth = Math.max(1.5, c * 0.08); g.strokeStyle = teamColor(o); g.stroke();
    }
    // orientation: a white nose on the rim the way the agent faces
    const [dx, dy] = ORIENT_VEC[get(o, "orientation", step) | 0] || [0, -1];
    const px = -dy, py = dx;
    g.beginPath();
    g.moveTo(cx + dx * r * 1.22, cy + dy * r * 1.22);
    g.lineTo(cx + dx * r * 0.62 + px * r * 0.38, cy + dy * r * 0.62 + py * r * 0.38);
    g.lineTo(cx + dx * r * 0.62 - px * r * 0.38, cy + dy * r * 0.62 - py * r * 0.38);
    g.closePath(); g.fillStyle = "#fff"; g.fill();
    g.lineWidth = 1; g.strokeStyle = "rgba(0,0,0,0.5)"; g.stroke();
    if (c >= 13) {  // the agent's number
      g.font = `bold ${Math.floor(c * 0.36)}px sans-serif`;
      g.textAlign = "center"; g.textBaseline = "middle";
      g.lineWidth = Math.max(2, c * 0.07); g.strokeStyle = "rgba(0,0,0,0.65)";
      g.strokeText(String(o.agentId), cx, cy + 1);
      g.fillStyle = "#fff"; g.fillText(String(o.agentId), cx, cy + 1);
    }
    if (frozen) {  // icy ring with frost ticks
      g.beginPath(); g.arc(cx, cy, r, 0, 2 * Math.PI);
      g.lineWidth = Math.max(2, c * 0.14); g.strokeStyle = "#7fdbff"; g.stroke();
      if (c >= 10) {
        g.strokeStyle = "#e8f8ff"; g.lineWidth = Math.max(1, c * 0.04); g.beginPath();
        for (let i = 0; i < 8; i++) {
          const t = (i * Math.PI) / 4;
          g.moveTo(cx + Math.cos(t) * r * 0.85, cy + Math.sin(t) * r * 0.85);
          g.lineTo(cx + Math.cos(t) * r * 1.18, cy + Math.sin(t) * r * 1.18);
        }
        g.stroke();
      }
    }
    if (state.selected === o || state.controlled === o) {
      g.beginPath(); g.arc(cx, cy, r + Math.max(2, c * 0.12), 0, 2 * Math.PI);
      g.lineWidth = state.controlled === o ? 3 : 2; g.strokeStyle = state.controlled === o ? "#ffffff" : "#ffeb3b";
      g.setLineDash(state.controlled === o ? [4, 3] : []); g.stroke(); g.setLineDash([]);
    }
    if (state.controlled === o && c >= 10) {
      g.font = `bold ${Math.max(9, Math.floor(c * 0.3))}px sans-serif`;
      g.textAlign = "center"; g.textBaseline = "bottom";
      g.lineWidth = 3; g.strokeStyle = "#000"; g.strokeText("YOU", cx, cy - r - 3);
      g.fillStyle = "#fff"; g.fillText("YOU", cx, cy - r - 3);
    }
    const inv = get(o, "inventory", step) || [];
    if (inv.length && c >= 18) drawInventoryIcons(g, inv, state.ox + loc[0] * c, state.oy + loc[1] * c, c, false);
  }

  // Small item icons along the bottom of a cell (count beside when > 1).
  function drawInventoryIcons(g, inv, x, y, c, onConverter) {
    const s = Math.max(5, Math.min(14, c * 0.26));
    let px = x + 1;
    const py = y + c - s - 1;
    for (const [item, n] of inv.slice(0, onConverter ? 2 : 4)) {
      drawItemIcon(g, item, px, py, s);
      px += s;
      if (n > 1 && c >= 24) {
        g.font = `bold ${Math.floor(s * 0.8)}px sans-serif`; g.textAlign = "left"; g.textBaseline = "bottom";
        g.lineWidth = 2; g.strokeStyle = "#000"; g.strokeText(String(n), px, y + c);
        g.fillStyle = "#fff"; g.fillText(String(n), px, y + c);
        px += s * 0.6 * String(n).length;
      }
      px += 1;
    }
  }

  function itemColor(name) {
    if (name.endsWith("_red")) return "#e5534b";
    if (name.endsWith("_blue")) return "#539bf5";
    if (name.endsWith("_green")) return "#57ab5a";
    return "#bbbbbb";
  }

  function drawItemIcon(g, item, x, y, s) {
    const name = state.itemNames[item] || `item${item}`;
    g.save();
    g.lineWidth = Math.max(1, s * 0.1); g.strokeStyle = "rgba(0,0,0,0.7)";
    if (name === "heart") {
      g.fillStyle = "#ff4f9a"; g.beginPath();
      g.moveTo(x + s / 2, y + s * 0.9);
      g.bezierCurveTo(x - s * 0.1, y + s * 0.45, x + s * 0.15, y - s * 0.05, x + s / 2, y + s * 0.3);
      g.bezierCurveTo(x + s * 0.85, y - s * 0.05, x + s * 1.1, y + s * 0.45, x + s / 2, y + s * 0.9);
      g.fill(); g.stroke();
    } else if (name.startsWith("ore")) {
      g.fillStyle = itemColor(name); g.beginPath();
      g.moveTo(x + s * 0.5, y + s * 0.08); g.lineTo(x + s * 0.92, y + s * 0.45); g.lineTo(x + s * 0.7, y + s * 0.92);
      g.lineTo(x + s * 0.25, y + s * 0.9); g.lineTo(x + s * 0.08, y + s * 0.42); g.closePath(); g.fill(); g.stroke();
    } else if (name.startsWith("battery")) {
      g.fillStyle = itemColor(name);
      g.fillRect(x + s * 0.2, y + s * 0.22, s * 0.6, s * 0.72); g.strokeRect(x + s * 0.2, y + s * 0.22, s * 0.6, s * 0.72);
      g.fillStyle = "#ddd"; g.fillRect(x + s * 0.38, y + s * 0.06, s * 0.24, s * 0.16);
    } else if (name === "laser") {
      g.fillStyle = "#b083f0"; g.beginPath();
      g.moveTo(x + s * 0.62, y); g.lineTo(x + s * 0.2, y + s * 0.55); g.lineTo(x + s * 0.48, y + s * 0.55);
      g.lineTo(x + s * 0.36, y + s); g.lineTo(x + s * 0.82, y + s * 0.4); g.lineTo(x + s * 0.54, y + s * 0.4);
      g.closePath(); g.fill(); g.stroke();
    } else if (name === "armor") {
      g.fillStyle = "#90a4ae"; g.beginPath();
      g.moveTo(x + s * 0.5, y + s * 0.05); g.lineTo(x + s * 0.9, y + s * 0.2); g.lineTo(x + s * 0.8, y + s * 0.7);
      g.lineTo(x + s * 0.5, y + s * 0.97); g.lineTo(x + s * 0.2, y + s * 0.7); g.lineTo(x + s * 0.1, y + s * 0.2);
      g.closePath(); g.fill(); g.stroke();
    } else {
      g.fillStyle = name === "blueprint" ? "#4f8fe8" : itemColor(name);
      g.fillRect(x + s * 0.12, y + s * 0.12, s * 0.76, s * 0.76); g.strokeRect(x + s * 0.12, y + s * 0.12, s * 0.76, s * 0.76);
    }
    g.restore();
  }

  const iconCache = new Map();
  function itemIconUrl(item) {
    const key = `${item}:${state.itemNames[item]}`;
    if (!iconCache.has(key)) {
      const cv = document.createElement("canvas");
      cv.width = cv.height = 28;
      drawItemIcon(cv.getContext("2d"), item, 1, 1, 26);
      iconCache.set(key, cv.toDataURL());
    }
    return iconCache.get(key);
  }

  // The action an agent took to reach `step`, drawn on the map.
  function drawAction(g, o, step, c) {
    if (step < 1) return;
    const a = get(o, "action", step), name = state.actionNames[a] || "";
    if (!name || name === "noop") return;
    const ok = !!get(o, "action_success", step);
    const loc = get(o, "location", step);
    const [dx, dy] = ORIENT_VEC[get(o, "orientation", step) | 0] || [0, -1];
    const cx = state.ox + loc[0] * c + c / 2, cy = state.oy + loc[1] * c + c / 2;
    if (name.startsWith("attack")) {  // a hit flashes the 3x3 block ahead; a miss is a faint line
      const px = -dy, py = dx;
      const [w, h] = state.replay.map_size;
      g.fillStyle = "rgba(255, 70, 50, 0.35)";
      for (let f = 1; f <= 3 && ok; f++) {
        for (let sd = -1; sd <= 1; sd++) {
          const col = loc[0] + dx * f + px * sd, row = loc[1] + dy * f + py * sd;
          if (col >= 0 && row >= 0 && col < w && row < h) g.fillRect(state.ox + col * c + 1, state.oy + row * c + 1, c - 2, c - 2);
        }
      }
      g.strokeStyle = ok ? "#ff3b30" : "rgba(255,59,48,0.5)"; g.lineWidth = Math.max(2, c * 0.1);
      g.beginPath(); g.moveTo(cx, cy); g.lineTo(cx + dx * c * (ok ? 2.2 : 1.2), cy + dy * c * (ok ? 2.2 : 1.2)); g.stroke();
    } else if (name === "get_items" || name === "put_items") {  // arrow between the agent and the faced cell
      const get_ = name === "get_items";
      const from = get_ ? [cx + dx * c * 0.95, cy + dy * c * 0.95] : [cx + dx * c * 0.3, cy + dy * c * 0.3];
      const to = get_ ? [cx + dx * c * 0.3, cy + dy * c * 0.3] : [cx + dx * c * 0.95, cy + dy * c * 0.95];
      arrow(g, from, to, ok ? (get_ ? "#2ea043" : "#1f6feb") : "rgba(120,120,120,0.8)", Math.max(2, c * 0.1));
    }
    if (!ok && c >= 8) {  // a failed action: a red cross at the top right
      const s = Math.max(3, c * 0.16), x = cx + c * 0.3, y = cy - c * 0.3;
      g.strokeStyle = "#ff3b30"; g.lineWidth = Math.max(2, c * 0.07);
      g.beginPath(); g.moveTo(x - s, y - s); g.lineTo(x + s, y + s); g.moveTo(x + s, y - s); g.lineTo(x - s, y + s); g.stroke();
    }
  }

  function arrow(g, [x0, y0], [x1, y1], color, width) {
    const ang = Math.atan2(y1 - y0, x1 - x0), head = width * 2.4;
    g.strokeStyle = color; g.fillStyle = color; g.lineWidth = width;
    g.beginPath(); g.moveTo(x0, y0); g.lineTo(x1 - Math.cos(ang) * head * 0.8, y1 - Math.sin(ang) * head * 0.8); g.stroke();
    g.beginPath(); g.moveTo(x1, y1);
    g.lineTo(x1 - Math.cos(ang - 0.45) * head, y1 - Math.sin(ang - 0.45) * head);
    g.lineTo(x1 - Math.cos(ang + 0.45) * head, y1 - Math.sin(ang + 0.45) * head);
    g.closePath(); g.fill();
  }

  // What the agent sees: everything outside its egocentric window (obs_width x obs_height) is dimmed.
  function drawObservationWindow(g, o, step, c) {
    const cfg = state.replay.config || {};
    const ow = cfg.obs_width || 11, oh = cfg.obs_height || 11;
    const loc = get(o, "location", step);
    const [w, h] = state.replay.map_size;
    const x0 = state.ox + (loc[0] - Math.floor(ow / 2)) * c, y0 = state.oy + (loc[1] - Math.floor(oh / 2)) * c;
    g.save();
    g.beginPath();
    g.rect(state.ox, state.oy, w * c, h * c);
    g.rect(x0, y0, ow * c, oh * c);
    g.fillStyle = "rgba(10, 12, 16, 0.38)";
    g.fill("evenodd");  // the window is a hole in the shade
    g.strokeStyle = "rgba(255, 255, 255, 0.7)"; g.lineWidth = 1.5; g.setLineDash([6, 4]);
    g.strokeRect(x0, y0, ow * c, oh * c);
    g.restore();
  }

  function drawTrail(g, o, step, c) {
    g.beginPath();
    let started = false;
    for (let s = Math.max(0, step - 30); s <= step; s++) {
      const loc = get(o, "location", s);
      const x = state.ox + loc[0] * c + c / 2, y = state.oy + loc[1] * c + c / 2;
      if (!started) { g.moveTo(x, y); started = true; } else g.lineTo(x, y);
    }
    g.strokeStyle = "rgba(255, 200, 0, 0.6)"; g.lineWidth = Math.max(1, c * 0.12); g.stroke();
  }

  let renderQueued = false;
  function render() {
    if (!state.replay) return;
    resizeCanvas();
    const step = state.step, c = state.cell;
    const [w, h] = state.replay.map_size;
    // visible cells only
    const x0 = Math.max(0, Math.floor(-state.ox / c)), y0 = Math.max(0, Math.floor(-state.oy / c));
    const x1 = Math.min(w - 1, Math.ceil((canvas.width - state.ox) / c)), y1 = Math.min(h - 1, Math.ceil((canvas.height - state.oy) / c));
    const visible = (l) => l && l[0] >= x0 - 1 && l[0] <= x1 + 1 && l[1] >= y0 - 1 && l[1] <= y1 + 1;
    drawFloorAndWalls(ctx, c, x0, y0, x1, y1);
    for (const o of state.objects) {
      if (o.isAgent) continue;
      const l = get(o, "location", step);
      if (!visible(l)) continue;
      if (o.typeName === "wall" || o.typeName === "block") drawWall(ctx, l[0], l[1], c, o.typeName === "block");
      else drawConverter(ctx, o, step, c);
    }
    if (state.selected && state.selected.isAgent) drawTrail(ctx, state.selected, step, c);
    for (const o of state.agents) if (visible(get(o, "location", step))) drawAction(ctx, o, step, c);
    for (const o of state.agents) if (visible(get(o, "location", step))) drawAgent(ctx, o, step, c);
    const viewer = state.showView ? (state.controlled || (state.selected && state.selected.isAgent ? state.selected : null)) : null;
    if (viewer) drawObservationWindow(ctx, viewer, step, c);
    $("step").max = String(state.maxSteps);
    $("step").value = String(step);
    $("step-label").textContent = `step ${step} / ${state.maxSteps}`;
    updatePanel();
    updateAgentTable();
    drawTimeline();
    if (state.hover) showTooltip(state.hover.obj, state.hover.x, state.hover.y);
  }

  function scheduleRender() {
    if (renderQueued) return;
    renderQueued = true;
    requestAnimationFrame(() => { renderQueued = false; render(); });
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
      lines.push([`agent ${o.agentId}`, `(col ${loc[0]}, row ${loc[1]})` + (state.controlled === o ? "  YOU" : "")]);
      lines.push(["team", teamOf(o)]);
      lines.push(["facing", ORIENT[get(o, "orientation", step)] || "?"]);
      const ok = get(o, "action_success", step);
      lines.push(["action", step > 0 ? `${actionName(get(o, "action", step))} ${ok ? "\u2713" : "\u2717"}` : "-"]);
      lines.push(["frozen", fmt(get(o, "frozen", step) || 0)]);
      lines.push(["reward (step)", fmt(get(o, "current_reward", step) || 0)]);
      lines.push(["reward (total)", fmt(get(o, "total_reward", step) || 0)]);
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
    tip.style.left = `${Math.min(x + 14, stage.width - 230)}px`;
    tip.style.top = `${Math.min(y + 14, stage.height - 190)}px`;
  }

  function inventoryHtml(inv) {
    if (!inv || !inv.length) return '<span class="hint">empty</span>';
    return inv.map(([i, n]) => `<span class="inv" title="${esc(itemName(i))}"><img alt="${esc(itemName(i))}" ` +
      `src="${itemIconUrl(i)}">${n}</span>`).join("");
  }

  function updatePanel() {
    const o = state.selected, el = $("selected");
    if (!o) { el.innerHTML = '<p class="hint">Click an agent or object.</p>'; return; }
    const rows = describe(o, state.step).filter(([k]) => !k.startsWith("  ") && k !== "inventory")
      .map(([k, v]) => `<tr><td>${esc(k)}</td><td>${esc(v)}</td></tr>`).join("");
    let html = `<table>${rows}<tr><td>inventory</td><td id="selected-inventory">` +
      `${inventoryHtml(get(o, "inventory", state.step))}</td></tr></table>`;
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
      const ring = state.teams ? `border-color:${teamColor(o)}` : "";
      tr.innerHTML = `<td><span class="swatch" style="background:${agentColor(o.agentId)};${ring}"></span>${o.agentId}</td>` +
        `<td>${esc(teamOf(o))}</td><td></td><td></td><td></td>`;
      tr.addEventListener("click", () => { state.selected = o; render(); });
      tr.addEventListener("dblclick", () => { const l = get(o, "location", state.step); centerOn(l[0], l[1]); });
      body.appendChild(tr);
      o.row = tr;
    }
  }

  function updateAgentTable() {
    for (const o of state.agents) {
      if (!o.row) continue;
      const cells = o.row.children;
      cells[1].textContent = state.controlled === o ? "you" : teamOf(o);
      cells[2].textContent = fmt(get(o, "total_reward", state.step) || 0);
      cells[3].textContent = String(countOf(get(o, "inventory", state.step), state.itemNames.indexOf("heart")));
      cells[4].textContent = state.step > 0 ? actionName(get(o, "action", state.step)) : "";
      cells[4].className = state.step > 0 && !get(o, "action_success", state.step) ? "fail" : "";
      o.row.classList.toggle("sel", state.selected === o);
      o.row.classList.toggle("you", state.controlled === o);
    }
  }

  function buildLegend() {
    const present = new Set(state.objects.map((o) => o.typeName));
    const items = [];
    for (const name of present) {
      if (name === "agent") continue;
      const color = name === "wall" ? WALL_TOP : name === "block" ? BLOCK : (OBJECT_STYLE[name] || ["#888"])[0];
      items.push(`<span class="legend-item"><i style="background:${color}"></i>${esc(name)}</span>`);
    }
    items.push('<span class="legend-item"><i style="background:#7fdbff;border-radius:50%"></i>frozen</span>');
    items.push('<span class="legend-item"><i style="background:#fff59d"></i>converting</span>');
    items.push('<span class="legend-item"><i style="background:#ff5b45"></i>attack</span>');
    items.push('<span class="legend-item"><i style="background:#2ea043"></i>get</span>');
    items.push('<span class="legend-item"><i style="background:#1f6feb"></i>put</span>');
    items.push('<span class="legend-item"><b class="fail">\u2717</b>failed action</span>');
    items.push('<br><span class="hint">timeline: <b style="color:#56d364">reward</b>, ' +
      '<b style="color:#ff4f9a">hearts</b>, <b style="color:#ff5b45">attacks</b>, <b style="color:#7fdbff">freezes</b></span>');
    for (let i = 0; i < state.itemNames.length; i++) {
      items.push(`<span class="legend-item inv"><img alt="" src="${itemIconUrl(i)}">${esc(state.itemNames[i])}</span>`);
    }
    $("legend").innerHTML = items.join("");
  }

  function showHelp(show) {
    const el = $("help");
    if (show === undefined) show = el.hidden;
    if (!show) { el.hidden = true; return; }
    const rows = [];
    if (state.live) {
      for (const k of state.live.keys) rows.push([k.keys, `${k.action}: ${k.help}`]);
      rows.push(["Space", "run / pause real time (in real-time mode)"], ["N", "restart (next episode)"],
        ["Ctrl+S", "save the episode as a replay"], ["[ ]", "control the previous / next agent"]);
    } else {
      rows.push(["Space", "play / pause"], ["\u2190 \u2192", "step back / forward (Shift: 10)"],
        ["Home End", "first / last step"], ["[ ]", "slower / faster"]);
    }
    rows.push(["Tab", "select the next agent (Shift: previous)"], ["C", "centre on the selected agent"],
      ["V", "show / hide what the agent sees (its observation window)"],
      ["wheel, + -", "zoom around the cursor"], ["drag", "pan"], ["0", "fit the map"], ["?", "this help"]);
    el.innerHTML = `<b>Keys</b><table>${rows.map(([k, v]) => `<tr><td><kbd>${esc(k)}</kbd></td><td>${esc(v)}</td></tr>`).join("")}</table>`;
    el.hidden = false;
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

  function canvasXY(ev) {
    const rect = canvas.getBoundingClientRect();
    return [(ev.clientX - rect.left) * state.dpr, (ev.clientY - rect.top) * state.dpr];
  }

  function cellOf(ev) {
    const [x, y] = canvasXY(ev);
    return [Math.floor((x - state.ox) / state.cell), Math.floor((y - state.oy) / state.cell)];
  }

  canvas.addEventListener("pointerdown", (ev) => {
    if (!state.loaded || ev.button !== 0) return;
    state.drag = { x: ev.clientX, y: ev.clientY, ox: state.ox, oy: state.oy, moved: false };
    canvas.setPointerCapture(ev.pointerId);
  });
  canvas.addEventListener("pointermove", (ev) => {
    if (!state.loaded) return;
    const d = state.drag;
    if (d) {
      const dx = ev.clientX - d.x, dy = ev.clientY - d.y;
      if (!d.moved && Math.abs(dx) + Math.abs(dy) > 4) { d.moved = true; canvas.classList.add("panning"); }
      if (d.moved) {
        state.ox = d.ox + dx * state.dpr; state.oy = d.oy + dy * state.dpr;
        $("tooltip").hidden = true; state.hover = null;
        scheduleRender();
        return;
      }
    }
    const [col, row] = cellOf(ev);
    const o = objectAt(col, row, state.step);
    const stage = $("stage").getBoundingClientRect();
    if (o) { state.hover = { obj: o, x: ev.clientX - stage.left, y: ev.clientY - stage.top }; showTooltip(o, state.hover.x, state.hover.y); }
    else { state.hover = null; $("tooltip").hidden = true; }
  });
  canvas.addEventListener("pointerup", (ev) => {
    const d = state.drag;
    state.drag = null;
    canvas.classList.remove("panning");
    if (!state.loaded || !d || d.moved) return;
    const [col, row] = cellOf(ev);
    const o = objectAt(col, row, state.step);
    if (o) { state.selected = o; render(); }
  });
  canvas.addEventListener("mouseleave", () => { state.hover = null; $("tooltip").hidden = true; });
  canvas.addEventListener("dblclick", (ev) => { const [col, row] = cellOf(ev); centerOn(col, row); });
  canvas.addEventListener("wheel", (ev) => {
    if (!state.loaded) return;
    ev.preventDefault();
    const [x, y] = canvasXY(ev);
    zoomAt(state.cell * Math.pow(1.0015, -ev.deltaY), x, y);
  }, { passive: false });

  tl.addEventListener("pointerdown", (ev) => {
    if (!state.loaded) return;
    tl.setPointerCapture(ev.pointerId);
    tl.dragging = true;
    setStep(timelineStep(ev));
  });
  tl.addEventListener("pointermove", (ev) => {
    if (!state.loaded) return;
    if (tl.dragging) setStep(timelineStep(ev));
    const s = Math.max(0, Math.min(state.maxSteps, timelineStep(ev))), e = state.events[s];
    tl.title = e ? `step ${s}: reward ${fmt(e.reward)}` + (e.who.length ? `; ${e.who.join(", ")}` : "") : `step ${s}`;
  });
  tl.addEventListener("pointerup", () => { tl.dragging = false; });

  function setStep(s) {
    state.step = Math.max(0, Math.min(state.maxSteps, s | 0));
    if (state.live) state.follow = state.step === state.maxSteps;
    render();
  }

  function setPlaying(p) {
    state.playing = p && state.loaded && !state.live;
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

  function setSpeedIndex(delta) {
    const sel = $("speed"), i = Math.max(0, Math.min(sel.options.length - 1, sel.selectedIndex + delta));
    sel.selectedIndex = i; state.speed = parseFloat(sel.value);
  }

  function cycleSelection(back) {
    if (!state.agents.length) return;
    const i = state.agents.indexOf(state.selected);
    state.selected = state.agents[(i + (back ? -1 : 1) + state.agents.length) % state.agents.length];
    render();
  }

  $("step").addEventListener("input", (ev) => setStep(parseInt(ev.target.value, 10)));
  $("play").addEventListener("click", () => setPlaying(!state.playing));
  $("prev").addEventListener("click", () => setStep(state.step - 1));
  $("next").addEventListener("click", () => setStep(state.step + 1));
  $("speed").addEventListener("change", (ev) => { state.speed = parseFloat(ev.target.value); });
  $("zoom").addEventListener("input", (ev) => setZoom(parseInt(ev.target.value, 10)));
  $("fit").addEventListener("click", () => { fitZoom(); render(); });
  $("help-button").addEventListener("click", () => showHelp());

  function onKey(ev) {
    if (ev.target.tagName === "INPUT" && ev.target.type !== "range") return;
    if (ev.target.tagName === "SELECT") return;
    if (ev.key === "?") { showHelp(); return; }
    if (ev.key === "Escape") { showHelp(false); return; }
    if (state.live && playKey(ev)) return;
    if (ev.key === "Tab") { ev.preventDefault(); cycleSelection(ev.shiftKey); return; }
    if (ev.key === "+" || ev.key === "=") { setZoom(state.cell * 1.25); return; }
    if (ev.key === "-") { setZoom(state.cell / 1.25); return; }
    if (ev.key === "0") { fitZoom(); render(); return; }
    if (ev.key === "v" || ev.key === "V") { state.showView = !state.showView; render(); return; }
    if (ev.key === "c" || ev.key === "C") {
      if (state.selected) { const l = get(state.selected, "location", state.step); centerOn(l[0], l[1]); }
      return;
    }
    if (state.live) return;
    if (ev.key === " ") { ev.preventDefault(); setPlaying(!state.playing); }
    else if (ev.key === "ArrowRight") { ev.preventDefault(); setStep(state.step + (ev.shiftKey ? 10 : 1)); }
    else if (ev.key === "ArrowLeft") { ev.preventDefault(); setStep(state.step - (ev.shiftKey ? 10 : 1)); }
    else if (ev.key === "Home") setStep(0);
    else if (ev.key === "End") setStep(state.maxSteps);
    else if (ev.key === "[") setSpeedIndex(-1);
    else if (ev.key === "]") setSpeedIndex(1);
  }
  document.addEventListener("keydown", onKey);

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

  // ------------------------------------------------------------------------------------------ play mode

  // The key -> action table from the server, matched on the key (letters case-blind; Shift picks rotate).
  function keyAction(ev) {
    if (ev.ctrlKey || ev.metaKey) return null;
    const norm = (k) => (k.length === 1 ? k.toLowerCase() : k);
    for (const k of state.live.keys) {
      for (const spec of k.keys.split(" ")) {
        const shift = spec.startsWith("Shift+"), alt = spec.startsWith("Alt+");
        const base = spec.replace(/^(Shift|Alt)\+/, "");
        if (alt) { if (ev.altKey && ev.code === `Digit${base}`) return k.action; continue; }
        if (!ev.altKey && shift === ev.shiftKey && norm(ev.key) === norm(base)) return k.action;
      }
    }
    return null;
  }

  function playKey(ev) {
    if (ev.ctrlKey && (ev.key === "s" || ev.key === "S")) { ev.preventDefault(); save(); return true; }
    const action = keyAction(ev);
    if (action) {
      ev.preventDefault();
      if (ev.repeat && state.pending > 1) return true;  // held keys: do not pile up requests
      if (state.realtime && !state.runPaused) { state.queuedAction = action; $("play-queued").textContent = `next: ${action}`; }
      else enqueue(action);
      return true;
    }
    if (ev.key === " ") { ev.preventDefault(); if (state.realtime) setRunPaused(!state.runPaused); return true; }
    if (ev.key === "n" || ev.key === "N") { restart(); return true; }
    if (ev.key === "[" || ev.key === "]") {
      const n = state.live.num_agents;
      switchAgent((state.live.agent + (ev.key === "]" ? 1 : n - 1)) % n);
      return true;
    }
    return false;
  }

  function playMessage(html, isError) {
    const el = $("play-message");
    el.innerHTML = html;
    el.classList.toggle("error", !!isError);
  }

  async function api(path, body) {
    const opts = body === undefined ? {} : { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
    let resp;
    try {
      resp = await fetch(path, opts);
    } catch (e) {
      throw new Error(`the play server does not answer (${e.message}); is it still running?`);
    }
    let data = null;
    try { data = await resp.json(); } catch (e) { /* not JSON */ }
    if (!resp.ok) throw new Error((data && data.error) || `HTTP ${resp.status} from ${path}`);
    return data;
  }

  // Key presses are sent one at a time, in order; a few may wait while one is in flight.
  function enqueue(action) {
    if (state.queue.length >= 4) return;
    state.follow = true;  // acting brings the view back to the present
    state.queue.push(action);
    state.pending++;
    if (state.pending === 1) pump();
  }

  async function pump() {
    while (state.queue.length) {
      const action = state.queue[0];
      try {
        await doStep(action);
      } catch (e) {
        playMessage(esc(e.message), true);
        state.queue.length = 1;  // drop what was typed ahead of an error
      }
      state.queue.shift();
      state.pending--;
    }
  }

  async function doStep(action) {
    const out = await api("api/play/step", { action });
    state.lastResponse = out;
    if (out.step !== state.maxSteps + 1 || out.episode !== state.replay.episode) {
      await loadLive(true);  // another tab stepped too, or a restart happened elsewhere
    } else {
      applyChanges(out.step, out.changes);
    }
    if (out.done) {
      playMessage(`episode over at step ${out.step}` + (out.saved ? ` &mdash; saved ${esc(out.saved)}` : "") +
        " &mdash; press <kbd>N</kbd> or Restart for the next one");
      setRunPaused(true);
    } else if (!$("play-message").classList.contains("error") || action) {
      playMessage("");
    }
  }

  function applyChanges(step, changes) {
    for (const ch of changes) {
      let o = state.byId.get(ch.id);
      if (!o) { o = normalizeObject(ch); state.objects.push(o); state.byId.set(o.id, o); continue; }
      for (const [k, v] of Object.entries(ch)) if (k !== "id") setField(o, k, step, v);
    }
    state.maxSteps = step;
    state.replay.max_steps = step;
    if (state.follow) { state.step = step; keepInView(state.controlled); }
    computeEvents(step, step, false);
    render();
  }

  async function loadLive(keepView) {
    const r = await api("api/play/replay");
    state.live = r.play;
    setReplay(r, "play", "", keepView);
    state.follow = true;
    state.step = state.maxSteps;
    syncPlayBar();
    render();
  }

  function syncPlayBar() {
    const sel = $("play-agent");
    if (sel.options.length !== state.live.num_agents) {
      sel.innerHTML = Array.from({ length: state.live.num_agents }, (_, i) => `<option value="${i}">${i}</option>`).join("");
    }
    sel.value = String(state.live.agent);
    const keys = state.live.keys.map((k) => `<tr><td>${esc(k.keys)}</td><td>${esc(k.action)}</td></tr>`);
    keys.push("<tr><td>Space</td><td>run / pause (real time)</td></tr>", "<tr><td>N</td><td>restart</td></tr>",
      "<tr><td>Ctrl+S</td><td>save replay</td></tr>", "<tr><td>[ ]</td><td>switch agent</td></tr>",
      "<tr><td>V</td><td>show / hide your view</td></tr>", "<tr><td>?</td><td>all keys</td></tr>");
    $("keys").innerHTML = keys.join("");
  }

  async function restart() {
    try {
      setRunPaused(state.realtime ? false : state.runPaused);
      const r = await api("api/play/restart", {});
      state.live = r.play;
      setReplay(r, "play", "", true);
      state.follow = true;
      syncPlayBar();
      playMessage(`episode ${r.episode} started`);
    } catch (e) { playMessage(esc(e.message), true); }
  }

  async function switchAgent(agent) {
    try {
      state.live = await api("api/play/agent", { agent });
      await loadLive(true);
      state.selected = state.controlled;
      render();
      playMessage(`you now control agent ${agent}`);
    } catch (e) { playMessage(esc(e.message), true); }
  }

  async function save() {
    try {
      const out = await api("api/play/save", {});
      const link = `?replay=${encodeURIComponent(out.url)}`;
      playMessage(`saved ${esc(out.path)} &mdash; <a id="saved-link" href="${esc(link)}" target="_blank">open in the replay viewer</a>`);
      return out;
    } catch (e) { playMessage(esc(e.message), true); return null; }
  }

  function setRunPaused(p) {
    state.runPaused = p;
    $("play-pause").innerHTML = p ? "&#9654; Run" : "&#10074;&#10074; Pause";
    scheduleRealtime();
  }

  function scheduleRealtime() {
    clearTimeout(state.rtTimer);
    state.rtTimer = null;
    if (!state.live || !state.realtime || state.runPaused) return;
    const speed = parseFloat($("play-speed").value) || 4;
    state.rtTimer = setTimeout(async () => {
      if (state.pending === 0) {
        const action = state.queuedAction || "noop";
        state.queuedAction = null;
        $("play-queued").textContent = "";
        enqueue(action);
      }
      scheduleRealtime();
    }, 1000 / speed);
  }

  $("play-mode").addEventListener("change", (ev) => {
    state.realtime = ev.target.value === "realtime";
    setRunPaused(!state.realtime);
    ev.target.blur();
  });
  $("play-speed").addEventListener("change", (ev) => { scheduleRealtime(); ev.target.blur(); });
  $("play-pause").addEventListener("click", () => setRunPaused(!state.runPaused));
  $("play-restart").addEventListener("click", restart);
  $("play-save").addEventListener("click", save);
  $("play-agent").addEventListener("change", (ev) => { switchAgent(parseInt(ev.target.value, 10)); ev.target.blur(); });

  function startPlay(info) {
    state.live = info;
    document.body.dataset.mode = "play";
    $("brand").textContent = "MettaGrid play";
    $("play-bar").hidden = false;
    $("keys-box").hidden = false;
    $("play").disabled = true;
    state.runPaused = true;
    state.showView = true;  // the controlled agent's view, dimmed outside: what it can know
    // A heartbeat tells the server the tab is open; `bye` that it closed.
    setInterval(() => { fetch("api/play/ping", { method: "POST" }).catch(() => setStatus("the play server does not answer", true)); }, 1000);
    window.addEventListener("pagehide", () => navigator.sendBeacon("api/play/bye"));
    return loadLive(false).then(() => {
      // On a big map start close to your agent: about three observation windows across.
      const [w, h] = state.replay.map_size, cfg = state.replay.config || {};
      const span = 3 * Math.max(cfg.obs_width || 11, cfg.obs_height || 11);
      if (state.controlled && Math.max(w, h) > span) {
        state.cell = Math.max(MIN_CELL, Math.min(MAX_CELL, Math.min(canvas.width, canvas.height) / span));
        const l = get(state.controlled, "location", state.step);
        centerOn(l[0], l[1]);
      }
    }).catch((e) => fail(e.message));
  }

  // Re-centre on the controlled agent when it walks into the outer fifth of the view.
  function keepInView(o) {
    if (!o) return;
    const [w, h] = state.replay.map_size, c = state.cell;
    if (state.ox >= 0 && state.oy >= 0 && state.ox + w * c <= canvas.width && state.oy + h * c <= canvas.height) return;
    const l = get(o, "location", state.step);
    const x = state.ox + (l[0] + 0.5) * state.cell, y = state.oy + (l[1] + 0.5) * state.cell;
    const mx = canvas.width * 0.2, my = canvas.height * 0.2;
    if (x < mx || x > canvas.width - mx || y < my || y > canvas.height - my) {
      state.ox = canvas.width / 2 - (l[0] + 0.5) * state.cell;
      state.oy = canvas.height / 2 - (l[1] + 0.5) * state.cell;
    }
  }

  // ------------------------------------------------------------------------------------------ start

  async function init() {
    const params = new URLSearchParams(location.search);
    let url = params.get("replay");
    if (location.protocol.startsWith("http")) {
      // `?replay=` always means a replay (other servers, e.g. the dashboard, link to the viewer that way
      // and need not answer api/info); without it the server says whether it runs a game to play.
      if (!url) {
        try {
          const resp = await fetch("api/info");
          const info = resp.ok ? await resp.json() : null;
          if (info && info.mode === "play") return startPlay(info);
        } catch (e) { /* not our server: fine */ }
      }
      try {
        const resp = await fetch("api/replays");
        if (resp.ok) {
          const list = await resp.json();
          state.names = Object.fromEntries(list.map((r) => [r.url, r.name]));
          state.uris = Object.fromEntries(list.map((r) => [r.url, r.uri]));
          const sel = $("replay-list");
          sel.innerHTML = list.map((r) => `<option value="${esc(r.url)}">${esc(r.name)}</option>`).join("");
          sel.hidden = list.length < 2;
          if (!url && list.length) url = list[0].url;
          if (url) sel.value = url;
        }
      } catch (e) { /* no list: fine */ }
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
    get title() { return state.titleText || ""; },
    get events() { return state.events.filter(Boolean).filter((e) => e.heart || e.attack || e.freeze); },
    get live() { return state.live; },
    get pending() { return state.pending; },
    get lastResponse() { return state.lastResponse; },
    get episode() { return state.replay ? state.replay.episode : null; },
    get controlledAgent() { return state.controlled ? state.controlled.agentId : null; },
    get showView() { return state.showView; },
    agents() {
      return state.agents.map((o) => ({
        id: o.agentId, location: get(o, "location", state.step), orientation: get(o, "orientation", state.step),
        frozen: get(o, "frozen", state.step), inventory: get(o, "inventory", state.step),
        action: get(o, "action", state.step), action_success: get(o, "action_success", state.step),
        total_reward: get(o, "total_reward", state.step), color: agentColor(o.agentId), team: teamOf(o),
      }));
    },
    // Canvas pixel of a cell's centre, and a point on an agent's body away from its number and nose.
    cellCenter(col, row) { return [state.ox + (col + 0.5) * state.cell, state.oy + (row + 0.5) * state.cell]; },
    agentBodyPoint(agentId) {
      const o = state.agents.find((a) => a.agentId === agentId);
      const l = get(o, "location", state.step), [dx, dy] = ORIENT_VEC[get(o, "orientation", state.step) | 0];
      const [cx, cy] = this.cellCenter(l[0], l[1]);
      return [cx - dx * state.cell * 0.27, cy - dy * state.cell * 0.27];
    },
    setStep, setZoom, setPlaying, loadUrl, loadBuffer, zoomAt, centerOn, fitZoom() { fitZoom(); render(); },
    view() { return { cell: state.cell, ox: state.ox, oy: state.oy, width: canvas.width, height: canvas.height }; },
    select(agentId) { state.selected = state.agents.find((o) => o.agentId === agentId) || null; render(); },
    save, restart, switchAgent,
  };
  window.addEventListener("resize", () => { if (state.replay) render(); else drawTimeline(); });
  init();
})();

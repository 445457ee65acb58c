// The dashboard page: polls the JSON API and draws runs, curves (uPlot), scorecards and checkpoints.
// Every answer may carry errors; they are shown in the section whose data they concern.
(() => {
  "use strict";
  const $ = (id) => document.getElementById(id);
  const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
  const COLORS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf"];
  const state = {refreshS: 5, runs: [], selected: new Set(), known: new Set(), metric: null, scoreMetric: "reward",
                 chart: null, chartKey: "", curves: null, scorecard: null, loads: 0, timer: null, busy: false};

  async function getJSON(url) {
    let resp;
    try { resp = await fetch(url, {cache: "no-store"}); } catch (e) { throw new Error(`${url}: ${e.message}`); }
    let body = null;
    try { body = await resp.json(); } catch (e) { /* not JSON */ }
    if (!resp.ok) throw new Error((body && body.error) || `${url}: HTTP ${resp.status}`);
    return body;
  }

  function showErrors(id, errors) {
    $(id).innerHTML = (errors || []).filter(Boolean).map((e) => `<div class="error">${esc(e)}</div>`).join("");
  }

  const fmtNum = (v, digits = 3) => (v === null || v === undefined) ? "&ndash;" :
    (Math.abs(v) >= 1000 ? Math.round(v).toLocaleString("en-US") : Number(v).toFixed(digits));
  const fmtTime = (t) => t ? new Date(t * 1000).toLocaleString() : "&ndash;";

  // ------------------------------------------------------------------------------------------ runs
  function renderRuns(data) {
    showErrors("runs-errors", data.errors);
    state.runs = data.runs;
    // Every run with logs is drawn at first; later the checkboxes decide (a new run joins drawn).
    data.runs.forEach((r) => { if (!state.known.has(r.id) && r.metrics.length) state.selected.add(r.id); state.known.add(r.id); });
    const rows = data.runs.map((r, i) => {
      const status = r.status.split(" ")[0];
      const cfg = Object.keys(r.config || {}).length
        ? `<details><summary>${Object.keys(r.config).length} keys</summary><pre>${esc(JSON.stringify(r.config, null, 1))}</pre></details>`
        : "&ndash;";
      const problems = (r.errors || []).map((e) => `<div class="error">${esc(e)}</div>`).join("");
      return `<tr data-run="${esc(r.name)}" data-id="${esc(r.id)}">
        <td><input type="checkbox" class="plot" data-id="${esc(r.id)}" ${state.selected.has(r.id) ? "checked" : ""}
             style="accent-color:${COLORS[i % COLORS.length]}"></td>
        <th title="${esc(r.folder || r.source)}">${esc(r.name)}</th>
        <td class="status status-${esc(status)}">${esc(r.status)}</td>
        <td class="num agent-steps">${fmtNum(r.agent_steps, 0)}</td><td class="num sps">${fmtNum(r.sps, 0)}</td>
        <td>${esc(r.last_checkpoint || "") || "&ndash;"}</td><td>${fmtTime(r.last_update)}</td>
        <td>${cfg}</td><td class="problems">${problems}</td></tr>`;
    });
    $("runs").tBodies[0].innerHTML = rows.join("") ||
      `<tr><td colspan="9" class="empty">no runs</td></tr>`;
    document.querySelectorAll("input.plot").forEach((box) => box.addEventListener("change", () => {
      if (box.checked) state.selected.add(box.dataset.id); else state.selected.delete(box.dataset.id);
      refreshCurves();
    }));
    // Metrics: the union over all runs; overview/reward first when logged.
    const metrics = [...new Set(data.runs.flatMap((r) => r.metrics))].sort();
    const sel = $("metric");
    const current = state.metric || (metrics.includes("overview/reward") ? "overview/reward" : metrics[0]);
    if (sel.dataset.options !== metrics.join("\n")) {
      sel.innerHTML = metrics.map((m) => `<option>${esc(m)}</option>`).join("");
      sel.dataset.options = metrics.join("\n");
    }
    if (current) { sel.value = current; state.metric = current; }
  }

  // ------------------------------------------------------------------------------------------ curves
  function drawChart(data) {
    const withPoints = data.runs.filter((r) => r.points.length);
    showErrors("curve-errors", data.runs.map((r) => r.error));
    const key = JSON.stringify([data.metric, withPoints.map((r) => [r.id, r.points])]);
    state.curves = data;
    if (key === state.chartKey) return;  // unchanged: keep the chart (and the user's zoom)
    state.chartKey = key;
    if (state.chart) { state.chart.destroy(); state.chart = null; }
    const el = $("chart");
    if (!withPoints.length) { el.innerHTML = `<p class="empty">nothing to draw for ${esc(data.metric)}</p>`; return; }
    el.innerHTML = "";
    const tables = withPoints.map((r) => [r.points.map((p) => p[0]), r.points.map((p) => p[1])]);
    const joined = uPlot.join(tables);  // one x axis for all runs; gaps where a run has no point
    const idIndex = new Map(state.runs.map((r, i) => [r.id, i]));
    const series = [{label: data.x_key}].concat(withPoints.map((r) => ({
      label: r.name, stroke: COLORS[(idIndex.get(r.id) ?? 0) % COLORS.length], width: 2, spanGaps: true,
      points: {show: r.points.length < 60},
    })));
    const opts = {width: Math.max(400, el.clientWidth - 10), height: 320, series,
                  scales: {x: {time: false}}, axes: [{label: data.x_key}, {label: data.metric}],
                  legend: {live: true}};
    state.chart = new uPlot(opts, joined, el);
  }

  async function refreshCurves() {
    if (!state.metric) return;
    const ids = state.runs.filter((r) => state.selected.has(r.id)).map((r) => r.id);
    const qs = new URLSearchParams([["metric", state.metric], ...ids.map((id) => ["run", id])]);
    try { drawChart(await getJSON(`api/curves?${qs}`)); } catch (e) { showErrors("curve-errors", [e.message]); }
  }

  // ------------------------------------------------------------------------------------------ scorecard
  function color(v, lo, hi) {
    if (v === null || v === undefined) return "#eee";
    const t = hi === lo ? 0.5 : (v - lo) / (hi - lo);
    return `rgb(${Math.round(255 - 155 * t)},${Math.round(255 - 55 * t)},${Math.round(255 - 155 * t)})`;
  }
  const range = (rows) => {
    const vals = rows.flat().filter((v) => v !== null && v !== undefined);
    return vals.length ? [Math.min(...vals), Math.max(...vals)] : [0, 1];
  };
  function renderScorecard(d) {
    state.scorecard = d;
    showErrors("score-errors", (d.errors || []).map((e) => e.error));
    const sm = $("score-metric");
    const metrics = d.metrics.length ? d.metrics : ["reward"];
    if (sm.dataset.options !== metrics.join("\n")) {
      sm.innerHTML = metrics.map((m) => `<option>${esc(m)}</option>`).join("");
      sm.dataset.options = metrics.join("\n");
    }
    sm.value = d.metric;
    const [lo, hi] = range(d.values);
    const head = `<thead><tr><th>policy</th>${d.columns.map((c) => `<th>${esc(c)}</th>`).join("")}</tr></thead>`;
    const body = d.policies.map((p, i) => `<tr data-policy="${esc(p)}"><th>${esc(p)}</th>${d.columns.map((c, j) => {
      const v = d.values[i][j];
      const urls = d.replays[`${p}|${c}`] || [];
      const link = urls.length ? `<a class="replay" target="_blank" href="${esc(urls[0].viewer)}" title="${esc(urls[0].uri)}">&#9654;</a>` : "";
      const n = d.episodes[i][j];
      return `<td class="num" data-sim="${esc(c)}" style="background:${color(v, lo, hi)}" ${n ? `title="${n} episodes"` : ""}>${v === null ? "&ndash;" : v.toFixed(3)}${link}</td>`;
    }).join("")}</tr>`).join("");
    $("scorecard").dataset.metric = d.metric;
    $("scorecard").innerHTML = d.policies.length ? head + `<tbody>${body}</tbody>` :
      `<tbody><tr><td class="empty">no solo evaluations</td></tr></tbody>`;
    const cp = d.crossplay;
    if (!cp) {
      $("crossplay").innerHTML = `<tbody><tr><td class="empty">no cross-play episodes</td></tr></tbody>`;
      $("ratings").innerHTML = "";
      return;
    }
    const [clo, chi] = range(cp.values);
    $("crossplay").innerHTML = `<thead><tr><th>policy \\ opponent</th>${cp.policies.map((p) => `<th>${esc(p)}</th>`).join("")}</tr></thead><tbody>` +
      cp.policies.map((p, i) => `<tr data-policy="${esc(p)}"><th>${esc(p)}</th>${cp.values[i].map((v, j) => {
        const [w, l, dr] = cp.record[i][j];
        const t = cp.episodes[i][j] ? `title="${cp.episodes[i][j]} episodes: ${w} won, ${l} lost, ${dr} drawn"` : "";
        const urls = (cp.replays || {})[`${p}|${cp.policies[j]}`] || [];
        const link = urls.length ? `<a class="replay" target="_blank" href="${esc(urls[0].viewer)}" title="${esc(urls[0].uri)}">&#9654;</a>` : "";
        return `<td class="num" data-opponent="${esc(cp.policies[j])}" style="background:${color(v, clo, chi)}" ${t}>${v === null ? "&ndash;" : v.toFixed(3)}${link}</td>`;
      }).join("")}</tr>`).join("") + "</tbody>";
    $("ratings").innerHTML = `<thead><tr><th>policy</th><th>rating</th><th>mu</th><th>sigma</th><th>matches</th></tr></thead><tbody>` +
      cp.ratings.map((r) => `<tr data-policy="${esc(r.policy)}"><th>${esc(r.policy)}</th><td class="num rating">${r.rating.toFixed(2)}</td>
        <td class="num">${r.mu.toFixed(2)}</td><td class="num">${r.sigma.toFixed(2)}</td><td class="num">${r.matches}</td></tr>`).join("") + "</tbody>";
  }

  function renderCheckpoints(d) {
    showErrors("checkpoint-errors", []);
    $("checkpoints").innerHTML = d.runs.map((run) => {
      const suites = [...new Set(run.checkpoints.flatMap((c) => Object.keys(c.scores)))].sort();
      const rows = run.checkpoints.map((c) => `<tr data-checkpoint="${esc(c.name)}"><th title="${esc(c.uri)}">${esc(c.name)}</th>
        <td class="num">${c.epoch}</td><td class="num">${c.size ? (c.size / 1024).toFixed(0) + " KiB" : "&ndash;"}</td>
        <td>${fmtTime(c.modified)}</td>${suites.map((s) => `<td class="num" data-suite="${esc(s)}">${fmtNum(c.scores[s])}</td>`).join("")}</tr>`);
      return `<h3>${esc(run.name)}</h3>` + (rows.length ? `<table class="checkpoints" data-run="${esc(run.name)}"><thead><tr><th>checkpoint</th><th>epoch</th>
        <th>size</th><th>written</th>${suites.map((s) => `<th>${esc(s)} ${esc(d.metric)}</th>`).join("")}</tr></thead>
        <tbody>${rows.join("")}</tbody></table>` : `<p class="empty">no checkpoints</p>`);
    }).join("") || `<p class="empty">no checkpoints</p>`;
  }

  // ------------------------------------------------------------------------------------------ refresh
  async function refresh() {
    if (state.busy) return;  // a slow source (a far bucket) must not pile refreshes up
    state.busy = true;
    try { await refreshAll(); } finally { state.busy = false; }
  }

  async function refreshAll() {
    try {
      renderRuns(await getJSON("api/runs"));
    } catch (e) {
      showErrors("runs-errors", [e.message]);
    }
    await refreshCurves();
    try { renderScorecard(await getJSON(`api/scorecard?metric=${encodeURIComponent(state.scoreMetric)}`)); }
    catch (e) { showErrors("score-errors", [e.message]); }
    try { renderCheckpoints(await getJSON(`api/checkpoints?metric=${encodeURIComponent(state.scoreMetric)}`)); }
    catch (e) { showErrors("checkpoint-errors", [e.message]); }
    state.loads += 1;
    $("updated").textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.loads = String(state.loads);
  }

  function schedule() {
    clearInterval(state.timer);
    if ($("auto-refresh").checked) state.timer = setInterval(refresh, state.refreshS * 1000);
  }

  $("metric").addEventListener("change", (ev) => { state.metric = ev.target.value; refreshCurves(); });
  $("score-metric").addEventListener("change", (ev) => { state.scoreMetric = ev.target.value; refresh(); });
  $("auto-refresh").addEventListener("change", schedule);
  window.addEventListener("resize", () => { if (state.chart) state.chart.setSize({width: Math.max(400, $("chart").clientWidth - 10), height: 320}); });

  window.dashboard = {
    get loads() { return state.loads; },
    get metric() { return state.metric; },
    get chart() { return state.chart; },
    // The points drawn, per run, as the chart holds them: {name: [[x, y], ...]}.
    chartPoints() {
      if (!state.chart) return {};
      const [xs, ...ys] = state.chart.data;
      const out = {};
      state.chart.series.slice(1).forEach((s, i) => {
        out[s.label] = xs.map((x, k) => [x, ys[i][k]]).filter((p) => p[1] !== null && p[1] !== undefined);
      });
      return out;
    },
    setMetric(m) { state.metric = m; $("metric").value = m; return refreshCurves(); },
    refresh,
  };

  (async () => {
    try {
      const cfg = await getJSON("api/config");
      state.refreshS = cfg.refresh_s;
      $("sources").textContent = cfg.sources.join("  ");
    } catch (e) { showErrors("runs-errors", [e.message]); }
    await refresh();
    schedule();
  })();
})();

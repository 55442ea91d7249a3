// simbdp dashboard: polls /v1/dashboard with the key kept in this tab's sessionStorage.
// Every text from the server (file names, reasons) is set with textContent, never as HTML.
"use strict";
(() => {
  const KEY = "simbdp.apiKey";
  const POLL_MS = 2000;
  const CHART_HEIGHT = 170;
  const $ = (sel, root = document) => root.querySelector(sel);
  const panels = new Map(); // tenant -> {el, plots}
  let timer = null;
  let updates = 0;

  const num = (n) => (n === null || n === undefined ? "-" : Math.round(n).toLocaleString("en-US"));
  const dec = (n, d = 1) => (n === null || n === undefined ? "-" : n.toFixed(d));
  function bytes(n) {
    if (n === null || n === undefined) return "-";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i += 1; }
    return i === 0 ? `${n} B` : `${n.toFixed(1)} ${units[i]}`;
  }
  const clock = (t) => (t ? new Date(t * 1000).toLocaleTimeString("en-GB") : "-");
  const secs = (s) => (s === null || s === undefined ? "-" : `${s < 10 ? s.toFixed(2) : s.toFixed(1)} s`);
  const ms = (m) => (m === null || m === undefined ? "-" : `${m.toFixed(0)} ms`);

  // a long reason is cut in the table; the whole text is in the cell's tooltip
  function cut(text, max = 300) {
    if (!text || text.length <= max) return text || "";
    const span = document.createElement("span");
    span.textContent = `${text.slice(0, max)}…`;
    span.title = text;
    return span;
  }

  function tenantFromPath() {
    const m = location.pathname.match(/^\/dashboard\/tenants\/([^/]+)\/?$/);
    return m ? decodeURIComponent(m[1]) : null;
  }

  function windowSecs() { return Number($("#window").value); }

  function status(text) { $("#status").textContent = text; }

  function showLogin(error) {
    clearTimeout(timer);
    $("#login").hidden = false;
    $("#logout").hidden = true;
    $("#overview").hidden = true;
    $("#tenants").replaceChildren();
    panels.clear();
    $("#login-error").textContent = error || "";
    status("");
  }

  function showMessage(text) {
    const m = $("#message");
    m.textContent = text;
    m.hidden = !text;
  }

  function schedule() {
    clearTimeout(timer);
    timer = setTimeout(load, POLL_MS);
  }

  async function load() {
    const key = sessionStorage.getItem(KEY);
    if (!key) { showLogin(); return; }
    $("#login").hidden = true;
    $("#logout").hidden = false;
    const tenant = tenantFromPath();
    const url = (tenant ? `/v1/dashboard/tenants/${encodeURIComponent(tenant)}` : "/v1/dashboard")
      + `?window_secs=${windowSecs()}`;
    let r;
    try {
      r = await fetch(url, { headers: { Authorization: `Bearer ${key}` }, cache: "no-store" });
    } catch (e) {
      status(`the server does not answer (${e}); retrying`);
      schedule();
      return;
    }
    if (r.status === 401) {
      sessionStorage.removeItem(KEY);
      showLogin("The key was refused (wrong or revoked).");
      return;
    }
    if (r.status === 404) {
      document.body.dataset.notFound = "1";
      $("#tenants").replaceChildren();
      panels.clear();
      showMessage(`Not found: no tenant '${tenant}' for this key.`);
      status("404");
      return;
    }
    if (!r.ok) {
      status(`the server answered ${r.status}; retrying`);
      schedule();
      return;
    }
    const data = await r.json();
    showMessage("");
    render(data, tenant === null);
    updates += 1;
    document.body.dataset.updates = String(updates);
    status(`updated ${clock(data.now)} · every ${POLL_MS / 1000} s · `
      + `${data.tenants.length} tenant(s)${data.operator ? " · operator" : ""}`);
    if (updates === 1) {
      requestAnimationFrame(() => {
        window.simbdpFirstPaint = performance.now();
        document.body.dataset.ready = "1";
      });
    }
    schedule();
  }

  function render(data, overview) {
    const seen = new Set();
    for (const v of data.tenants) {
      seen.add(v.tenant);
      renderPanel(v);
    }
    for (const [t, p] of panels) {
      if (!seen.has(t)) { p.plots.forEach((pl) => pl.destroy()); p.el.remove(); panels.delete(t); }
    }
    $("#overview").hidden = !overview || !data.operator;
    if (overview && data.operator) renderOverview(data.tenants);
    if (!data.tenants.length) showMessage("No tenant to show for this key.");
  }

  function state(v) {
    if (!v.enabled) return ["disabled", "bad"];
    if (v.totals.crash_looping) return ["crash loop", "bad"];
    if (v.totals.failed_files) return ["failures", "warn"];
    return ["ok", "ok"];
  }

  function renderOverview(views) {
    const rows = views.map((v) => {
      const t = v.totals;
      const [text, cls] = state(v);
      const a = document.createElement("a");
      a.href = `/dashboard/tenants/${encodeURIComponent(v.tenant)}`;
      a.textContent = v.tenant;
      return row([a, dec(t.rows_per_sec_now), num(t.rows_loaded), num(t.rows_rejected),
        num(t.failed_files), num(t.backlog), `${t.instances_running} / ${t.instances_desired}`,
        `${(t.quota_max_fraction * 100).toFixed(1)}%`, [text, cls]], v.tenant);
    });
    $("#overview tbody").replaceChildren(...rows);
  }

  // a table row; a cell is text, a node, or [text, class]
  function row(cells, tenant) {
    const tr = document.createElement("tr");
    if (tenant !== undefined) tr.dataset.tenant = tenant;
    for (const c of cells) {
      const td = document.createElement("td");
      if (c instanceof Node) td.append(c);
      else if (Array.isArray(c)) { td.textContent = c[0]; td.className = c[1] || ""; }
      else td.textContent = c === null || c === undefined ? "" : String(c);
      tr.append(td);
    }
    return tr;
  }

  function panelFor(tenant) {
    let p = panels.get(tenant);
    if (p) return p;
    const el = $("#panel").content.firstElementChild.cloneNode(true);
    el.dataset.tenant = tenant;
    const name = $(".name", el);
    name.textContent = tenant;
    name.href = `/dashboard/tenants/${encodeURIComponent(tenant)}`;
    $("#tenants").append(el);
    p = { el, plots: [] };
    panels.set(tenant, p);
    return p;
  }

  function makePlots(p, data) {
    const mk = (which, title, series, yLabel, fmt) => {
      const box = $(`[data-chart="${which}"]`, p.el);
      const opts = {
        title, width: Math.max(200, box.clientWidth), height: CHART_HEIGHT,
        scales: { x: { time: true } },
        series: [{}, ...series.map(([label, stroke, points]) => ({
          label, stroke, width: 2, spanGaps: false, value: (u, x) => fmt(x),
          points: { show: points === true, size: 5, fill: stroke } }))],
        axes: [{}, { label: yLabel, size: 60, values: (u, xs) => xs.map((x) => fmt(x)) }],
        legend: { show: true },
      };
      return new uPlot(opts, data, box);
    };
    // three significant digits, so that small rates (0.004 MiB/s) keep distinct ticks
    const f2 = (x) => (x === null || x === undefined ? "-"
      : Math.abs(x) >= 100 ? Math.round(x).toLocaleString("en-US") : String(Number(x.toPrecision(3))));
    p.plots = [
      mk("rows", "rows loaded / s", [["rows/s", "#1565c0"]], "rows/s", f2),
      mk("mib", "MiB / s", [["MiB/s", "#2e7d32"]], "MiB/s", f2),
      // file percentiles are estimated from a histogram of the file times (approx.)
      mk("latency", "latency", [["file p50 s (approx.)", "#6a1b9a", true],
        ["file p99 s (approx.)", "#c62828", true], ["stream p99 s", "#ef6c00", true]],
        "seconds", f2),
    ];
    // redraw only the plot whose box changed width (the first call per box is a no-op)
    const resize = new ResizeObserver((entries) => {
      for (const e of entries) {
        const pl = p.plots.find((x) => x.root.parentElement === e.target);
        const width = Math.max(200, e.target.clientWidth);
        if (pl && pl.width !== width) pl.setSize({ width, height: CHART_HEIGHT });
      }
    });
    p.el.querySelectorAll(".chart").forEach((c) => resize.observe(c));
  }

  function renderPanel(v) {
    const p = panelFor(v.tenant);
    const t = v.totals;
    const set = (field, text) => { $(`[data-field="${field}"]`, p.el).textContent = text; };
    set("rows_per_sec_now", dec(t.rows_per_sec_now));
    set("rows_loaded", num(t.rows_loaded));
    set("rows_rejected", `${num(t.batch_rows_rejected)} / ${num(t.dead_letters)}`);
    set("files_processed", num(t.files.processed || 0));
    set("files_rejected", num((t.files.rejected || 0) + (t.files.duplicate || 0)));
    set("files_failed", num(t.files.failed || 0));
    set("bytes", bytes(t.bytes));
    set("messages", num(t.messages));
    set("batch_latency", `${secs(t.batch_p50_secs)} / ${secs(t.batch_p99_secs)}`);
    set("stream_latency", `${ms(t.stream_mean_ms)} / ${ms(t.stream_p99_ms)}`);
    set("backlog", num(t.backlog));
    set("instances", `${t.instances_running} / ${t.instances_desired}`);

    const badges = [];
    const badge = (text, cls) => {
      const b = document.createElement("span");
      b.className = `badge ${cls}`;
      b.textContent = text;
      badges.push(b);
    };
    if (!v.enabled) badge(`disabled: ${v.disabled_reason}`, "bad");
    for (const a of v.apps) {
      if (a.crash_looping) badge(`${a.app}: crash loop (${a.restarts} restarts in 15 min)`, "bad");
      if (a.paused_reason) badge(`${a.app} paused: ${a.paused_reason}`, "warn");
    }
    $(".badges", p.el).replaceChildren(...badges);
    const empty = !Object.keys(t.files).length && !t.messages && !v.apps.length;
    $(".empty", p.el).hidden = !empty;

    const s = v.series;
    const series = [
      [s.t, s.rows_per_sec],
      [s.t, s.mib_per_sec],
      [s.t, s.batch_p50_secs, s.batch_p99_secs,
        s.stream_p99_ms.map((x) => (x === null ? null : x / 1000))],
    ];
    if (!p.plots.length) makePlots(p, series[0]);
    p.plots.forEach((pl, i) => pl.setData(series[i]));

    const quota = v.quota.map((q) => {
      const div = document.createElement("div");
      div.dataset.quota = q.quota;
      const name = document.createElement("span");
      name.textContent = q.quota;
      const meter = document.createElement("meter");
      meter.min = 0; meter.max = 1; meter.low = 0.7; meter.high = 0.9; meter.optimum = 0;
      meter.value = Math.min(1, q.fraction);
      const val = document.createElement("span");
      const fmt = q.quota.endsWith("bytes") ? bytes : num;
      val.textContent = `${fmt(q.used)} / ${fmt(q.allowed)} (${(q.fraction * 100).toFixed(1)}%)`;
      div.append(name, meter, val);
      return div;
    });
    $(".quota", p.el).replaceChildren(...quota);

    $(".apps tbody", p.el).replaceChildren(...v.apps.map((a) => row([
      a.app, a.running, a.desired, num(a.backlog), a.restarts,
      a.crash_looping ? ["crash loop", "bad"] : a.paused_reason ? [`paused: ${a.paused_reason}`, "warn"]
        : a.running ? ["running", "ok"] : ["idle", "muted"]], a.app)));
    $(".instances tbody", p.el).replaceChildren(...v.instances.map((i) => row([
      i.instance, i.app, clock(i.last_report_at), num(i.messages),
      i.running ? ["reporting", "ok"] : ["silent", "muted"]], i.instance)));
    $(".reasons tbody", p.el).replaceChildren(...v.reasons.map((r) => row([
      [r.outcome, r.outcome === "failed" ? "bad" : "warn"], num(r.files), num(r.rows_rejected),
      r.reason ? cut(r.reason, 600)
        : r.rows_rejected ? "rows rejected (reasons in the rejected-rows files)" : ""])));
    $(".decisions tbody", p.el).replaceChildren(...v.decisions.map((d) => row([
      clock(d.at), d.app || "", d.action,
      d.instances_before === null ? "" : `${d.instances_before} → ${d.instances_after}`, d.reason])));
    $(".files tbody", p.el).replaceChildren(...v.files.map((f) => row([
      clock(f.ended_at || f.started_at), f.source,
      [f.outcome, { failed: "bad", rejected: "warn", processed: "ok" }[f.outcome] || ""],
      num(f.rows_loaded), num(f.rows_rejected), bytes(f.bytes), cut(f.reason)])));
  }

  document.addEventListener("DOMContentLoaded", () => {
    const w = new URLSearchParams(location.search).get("window");
    if (w && [...$("#window").options].some((o) => o.value === w)) $("#window").value = w;
    $("#window").addEventListener("change", () => {
      const q = new URLSearchParams(location.search);
      q.set("window", $("#window").value);
      history.replaceState(null, "", `${location.pathname}?${q}`);
      load();
    });
    $("#login").addEventListener("submit", (e) => {
      e.preventDefault();
      sessionStorage.setItem(KEY, $("#key").value.trim());
      $("#key").value = "";
      load();
    });
    $("#logout").addEventListener("click", () => {
      sessionStorage.removeItem(KEY);
      showLogin();
    });
    load();
  });
})();

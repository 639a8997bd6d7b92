"use strict";
// Linnet's dashboard and evidence report. No framework and no build step: this file is embedded
// in the sidecar and inlined into every page and report. Every value from the API is written
// as text (textContent, attributes), never parsed as markup.
const Linnet = (() => {
  const TOKEN_KEY = "linnet.token";
  const SVG = "http://www.w3.org/2000/svg";
  const LIVE = new Set(["pending", "shadowing", "progressing", "paused", "promoted"]);
  // Every kind of audit event the stream names (`event:` lines); any of them may change a view.
  const KINDS = ["created", "analysis", "kill_switch", "started", "step", "paused", "resumed",
    "promoted", "weight", "aborted", "rolled_back", "retried", "completed", "timed_out"];

  // === DOM ===

  function put(el, attrs, children) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat(Infinity)) {
      if (c === undefined || c === null || c === false) continue;
      el.append(c instanceof Node ? c : String(c));
    }
    return el;
  }
  const h = (tag, attrs, ...children) => put(document.createElement(tag), attrs, children);
  // Replaces el's children, skipping the absent ones (DOM's replaceChildren writes "null").
  const fill = (el, ...children) => { el.replaceChildren(); return put(el, {}, children); };
  const s = (tag, attrs, ...children) => put(document.createElementNS(SVG, tag), attrs, children);

  // === words and numbers ===

  const pad = (n) => String(n).padStart(2, "0");
  function clock(ms) {
    const d = new Date(ms);
    return `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}:${pad(d.getUTCSeconds())}`;
  }
  function stamp(ms) {
    if (ms === null || ms === undefined) return "—";
    return new Date(ms).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }
  function span(ms) {
    if (!(ms >= 0)) return "—";
    const t = Math.floor(ms / 1000);
    if (t < 60) return `${t}s`;
    if (t < 3600) return `${Math.floor(t / 60)}m ${pad(t % 60)}s`;
    return `${Math.floor(t / 3600)}h ${pad(Math.floor((t % 3600) / 60))}m`;
  }
  function num(v, digits) {
    if (v === null || v === undefined || !Number.isFinite(v)) return "—";
    return v.toLocaleString("en", { maximumFractionDigits: digits ?? 2 });
  }
  const pct = (v) => (v === null || v === undefined ? "—" : `${num(v * 100, 2)}%`);
  function stepWords(step) {
    const parts = [];
    if (step.weight !== undefined && step.weight !== null) parts.push(`${num(step.weight)}%`);
    if (step.mirror !== undefined && step.mirror !== null) parts.push(`mirror ${num(step.mirror)}%`);
    if (!parts.length) parts.push("same weight");
    parts.push(step.pause ? `for ${step.pause}` : "no pause");
    return parts.join(", ");
  }
  // The weight each step of a spec sets (absent: the previous step's).
  function planWeights(steps) {
    let w = 0;
    return steps.map((st) => (w = st.weight ?? w));
  }

  // === charts ===

  // A line chart of `series` ([{name, cls, points: [[ms, value]]}]); `stepped` draws each value
  // until the next (a weight holds until it changes). The figure says how many points it drew.
  function chart(id, title, unit, series, opts) {
    opts = opts || {};
    const W = 520, H = 170, L = 62, R = 12, T = 10, B = 24;
    const all = series.flatMap((x) => x.points).filter((p) => Number.isFinite(p[1]));
    const fig = h("figure", { class: "chart", "data-chart": id, "data-points": all.length },
      h("figcaption", {}, title));
    if (!all.length) {
      fig.append(h("p", { class: "nodata" }, opts.empty || "no data yet"));
      return fig;
    }
    let x0 = Math.min(...all.map((p) => p[0]));
    let x1 = Math.max(opts.until || 0, ...all.map((p) => p[0]));
    if (x1 <= x0) x1 = x0 + 1000;
    let top = opts.max ?? Math.max(...all.map((p) => p[1])) * 1.1;
    if (!(top > 0)) top = 1;
    const X = (t) => L + ((t - x0) / (x1 - x0)) * (W - L - R);
    const Y = (v) => T + (1 - Math.min(v, top) / top) * (H - T - B);
    const svg = s("svg", { viewBox: `0 0 ${W} ${H}`, role: "img", "aria-label": title },
      s("line", { class: "axis", x1: L, y1: T, x2: L, y2: H - B }),
      s("line", { class: "axis", x1: L, y1: H - B, x2: W - R, y2: H - B }),
      s("text", { x: L - 4, y: T + 8, "text-anchor": "end" }, `${num(top, 2)}${unit}`),
      s("text", { x: L - 4, y: H - B, "text-anchor": "end" }, `0${unit}`),
      s("text", { x: L, y: H - 6 }, clock(x0)),
      s("text", { x: W - R, y: H - 6, "text-anchor": "end" }, `${clock(x1)} UTC`));
    for (const x of series) {
      const pts = x.points.filter((p) => Number.isFinite(p[1]));
      if (!pts.length) continue;
      let d = `M${X(pts[0][0]).toFixed(1)},${Y(pts[0][1]).toFixed(1)}`;
      for (let i = 1; i < pts.length; i++) {
        if (opts.stepped) d += `H${X(pts[i][0]).toFixed(1)}`;
        d += `${opts.stepped ? "V" : "L"}${opts.stepped ? "" : X(pts[i][0]).toFixed(1) + ","}${Y(pts[i][1]).toFixed(1)}`;
      }
      if (opts.stepped && opts.until) d += `H${X(opts.until).toFixed(1)}`;
      svg.append(s("path", { class: `s-${x.cls}`, d, "data-series": x.name }));
      if (pts.length <= 80) {
        for (const p of pts) {
          svg.append(s("circle", { class: `s-${x.cls}`, cx: X(p[0]).toFixed(1), cy: Y(p[1]).toFixed(1), r: 2.5 },
            s("title", {}, `${x.name} ${clock(p[0])}: ${num(p[1], 3)}${unit}`)));
        }
      }
    }
    fig.append(svg, h("div", { class: "legend" },
      series.map((x) => h("span", {}, h("i", { style: `background: var(--${x.cls})` }), x.name))));
    return fig;
  }

  function charts(r, until) {
    const runs = r.runs.filter((x) => x.canary || x.stable);
    const of = (variant, field, scale) => runs
      .filter((x) => x[variant] && x[variant][field] !== null && x[variant][field] !== undefined)
      .map((x) => [x.at_ms, x[variant][field] * (scale || 1)]);
    const pair = (field, scale) => [
      { name: "canary", cls: "canary", points: of("canary", field, scale) },
      { name: "stable", cls: "stable", points: of("stable", field, scale) },
    ];
    const none = r.spec.analysis ? "no analysis run with traffic yet" : "this rollout has no analysis";
    return h("div", { class: "charts" },
      chart("weight", "Canary weight", "%",
        [{ name: "weight", cls: "weight", points: r.changes.map((c) => [c.at_ms, c.weight]) }],
        { stepped: true, max: 100, until }),
      chart("rps", "Requests per second, per analysis window", "/s", pair("requests_per_s"), { empty: none }),
      chart("errors", "5xx rate, per analysis window", "%", pair("error_rate", 100), { empty: none }),
      chart("p50", "p50 latency, per analysis window", " ms", pair("p50_ms"), { empty: none }),
      chart("p99", "p99 latency, per analysis window", " ms", pair("p99_ms"), { empty: none }));
  }

  // === a release: plan, charts, timeline (the dashboard's detail and the report share it) ===

  function timelineList(lines) {
    if (!lines.length) return h("p", { class: "nodata" }, "nothing yet");
    return h("ol", { class: "timeline" }, lines.slice().reverse().map((l) => {
      const details = l.details || [];
      const kind = l.kind.replace(/^check:/, "");
      const cls = kind === "pass" ? "pass" : ["roll_back", "rolled_back", "aborted", "timed_out"].includes(kind) || details.length ? "fail" : "";
      return h("li", { class: cls, "data-kind": l.kind },
        h("time", {}, l.until_ms !== l.at_ms ? `${clock(l.at_ms)}–${clock(l.until_ms)}` : clock(l.at_ms)),
        h("span", { class: "text" }, l.text),
        details.length ? h("ul", {}, details.map((d) => h("li", { class: "detail" }, d))) : null);
    }));
  }

  function planList(spec, step, state) {
    const weights = planWeights(spec.steps);
    return h("ol", { class: "plan" }, spec.steps.map((st, i) => {
      const cls = i === step && LIVE.has(state) ? "current" : i < step || state === "completed" || state === "promoted" ? "done" : "";
      return h("li", { class: cls, title: stepWords(st) },
        `${i + 1}. ${st.mirror !== undefined && st.weight === undefined ? `mirror ${num(st.mirror)}%` : `${num(weights[i])}%`}`,
        st.pause ? ` · ${st.pause}` : "");
    }));
  }

  function summary(r) {
    const d = r.decision;
    return h("div", { class: "summary" },
      h("p", {}, h("span", { class: `state ${r.state}`, "data-role": "state" }, r.state.replace("_", " ")),
        " ", h("span", { class: "muted" }, `release ${r.id}, created ${stamp(r.created_at_ms)}`,
          r.finished_at_ms ? `, ended ${stamp(r.finished_at_ms)}` : "")),
      d.reason ? h("p", { class: "reason", "data-role": "reason" },
        `${r.finished ? "Ended" : "Last change"}: ${d.reason}`,
        d.actor ? h("span", { class: "muted" }, ` (by ${d.actor}, ${stamp(d.at_ms)})`) : null) : null);
  }

  // === the evidence report (a file, or GET /v1/rollouts/{name}/report) ===

  function changesTable(changes) {
    return h("table", { "data-table": "changes" },
      h("thead", {}, h("tr", {}, ["time", "move", "state", "step", "weight", "by", "reason"].map((x) => h("th", {}, x)))),
      h("tbody", {}, changes.map((c) => h("tr", { "data-event": c.event },
        h("td", {}, stamp(c.at_ms)), h("td", {}, c.kind), h("td", {}, `${c.from} → ${c.to}`),
        h("td", { class: "num" }, c.step + 1), h("td", { class: "num" }, `${num(c.weight)}%`),
        h("td", {}, c.actor), h("td", {}, c.reason)))));
  }

  function checksTable(runs) {
    const rows = [];
    for (const run of runs) {
      const inputs = ["canary", "stable"].map((v) => run[v]
        ? `${v}: ${num(run[v].requests, 0)} req, ${num(run[v].errors, 0)} 5xx, p99 ${num(run[v].p99_ms)} ms`
        : `${v}: no data`).join("; ");
      const head = h("tr", { class: "run", "data-event": run.event },
        h("td", {}, stamp(run.at_ms)), h("td", { class: "num" }, run.step + 1),
        h("td", { class: "num" }, `${num(run.weight)}%`), h("td", {}, run.subject),
        h("td", { class: run.decision === "pass" ? "pass" : run.decision === "roll_back" ? "fail" : "" }, run.decision),
        h("td", { colspan: 4 }, run.reason, h("div", { class: "muted" }, run.source_error ? `source: ${run.source_error}` : inputs)));
      rows.push(head);
      for (const c of run.checks) {
        rows.push(h("tr", { class: "check", "data-event": run.event, "data-guardrail": c.guardrail },
          h("td", {}), h("td", {}), h("td", {}), h("td", {}, c.guardrail),
          h("td", { class: c.verdict }, c.verdict),
          h("td", {}, `${c.kind} (${c.severity})`), h("td", { class: "num" }, num(c.observed, 4)),
          h("td", { class: "num" }, num(c.limit, 4)), h("td", {}, c.text)));
      }
    }
    return h("table", { "data-table": "checks" },
      h("thead", {}, h("tr", {}, ["time", "step", "weight", "judged", "verdict", "kind", "observed", "limit", "why"].map((x) => h("th", {}, x)))),
      h("tbody", {}, rows));
  }

  function showReport(root, r) {
    const end = r.finished_at_ms || r.generated_at_ms;
    fill(root, h("div", { class: "report" },
      h("header", {}, h("div", { class: "muted" }, "Linnet evidence report"),
        h("h1", {}, r.rollout), summary(r),
        h("p", { class: "muted" }, `Generated ${stamp(r.generated_at_ms)} from the audit trail.`,
          r.truncated ? " Only the latest events are covered: the release has more than the report reads." : "")),
      h("section", { class: "card" }, h("h2", {}, "What was shipped"), planList(r.spec, lastStep(r), r.state),
        h("pre", { "data-role": "spec" }, JSON.stringify(r.spec, null, 2))),
      h("section", { class: "card" }, h("h2", {}, "Canary against stable"), charts(r, end)),
      h("section", { class: "card" }, h("h2", {}, "Decisions"), timelineList(r.timeline)),
      h("section", { class: "card" }, h("h2", {}, "Every change, and who made it"), changesTable(r.changes)),
      h("section", { class: "card" }, h("h2", {}, "Every check, with its inputs and verdict"),
        r.runs.length ? checksTable(r.runs) : h("p", { class: "nodata" }, "no analysis runs"))));
  }
  const lastStep = (r) => (r.changes.length ? r.changes[r.changes.length - 1].step : 0);

  // === the dashboard ===

  const token = () => sessionStorage.getItem(TOKEN_KEY) || "";

  async function api(method, path, body) {
    const headers = { Accept: "application/json" };
    const t = token();
    if (t) headers.Authorization = `Bearer ${t}`;
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(path, {
      method, headers, cache: "no-store", credentials: "omit",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    let data = null;
    try { data = JSON.parse(text); } catch (_) { data = null; }
    if (!res.ok) {
      const e = new Error((data && data.error) || text || res.statusText);
      e.status = res.status;
      throw e;
    }
    return data;
  }

  // What each control does, in words, before it does it.
  function controlsFor(st) {
    const weights = planWeights(st.spec.steps);
    const next = st.step + 1;
    const live = LIVE.has(st.state);
    const out = [];
    if (st.state === "progressing" || st.state === "shadowing" || st.state === "pending") {
      out.push({ id: "pause", label: "Pause", path: "pause", what:
        `Stops automatic stepping at step ${st.step + 1} of ${st.steps} (weight ${num(st.weight)}%). Analysis keeps judging and can still roll back. Resume to go on.` });
    }
    if (st.state === "paused") {
      out.push({ id: "resume", label: "Resume", path: "resume", what:
        `Steps again from step ${st.step + 1}: its pause runs for what remains of it, then the plan goes on.` });
    }
    if (live && st.state !== "promoted") {
      out.push({ id: "promote", label: "Promote", path: "promote", body: {}, what: next < st.steps
        ? `Moves to step ${next + 1} now (weight ${num(weights[next])}%), without waiting for this step's pause.`
        : "Promotes past the last step: the canary takes every request." });
      out.push({ id: "promote-full", label: "Promote fully", path: "promote", body: { full: true }, what:
        "Sends every request to the canary now and marks the rollout promoted, skipping every step left." });
    }
    if (st.state === "promoted") {
      out.push({ id: "complete", label: "Complete", path: "complete", what:
        "Hands the promoted rollout over: stable is taken to run the promoted version, the rollout is archived." });
    }
    if (live) {
      out.push({ id: "kill", label: st.kill_switch ? "Kill switch off" : "Kill switch on", path: "kill-switch",
        body: { on: !st.kill_switch }, danger: !st.kill_switch, what: st.kill_switch
          ? "Turns this rollout's kill switch off: requests are split by the weight again."
          : "Sends every request of this rollout to stable at once; the rollout stays where it is until the switch is off." });
      out.push({ id: "abort", label: "Abort", path: "abort", danger: true, what:
        "Sends every request back to stable (weight 0) and ends this rollout; it can be retried later." });
    }
    return out;
  }

  function dashboard(root) {
    const view = { rollouts: [], selected: null, report: null, kill: null, live: false,
      pending: null, message: null, offset: 0, readError: null };
    const liveBadge = h("span", { class: "live", "data-role": "live" }, "connecting");
    const killBadge = h("span", { "data-role": "global-kill" });
    const tokenBar = h("div", { class: "tokenbar", hidden: true });
    const list = h("section", { class: "card", "data-role": "list" });
    const detail = h("section", { "data-role": "detail" });
    fill(root,
      h("header", { class: "top" }, h("h1", {}, "LINNET"), killBadge, h("span", { class: "spacer" }), liveBadge),
      tokenBar, h("div", { class: "layout" }, h("aside", {}, list), detail));

    const selectedFromHash = () => decodeURIComponent(location.hash.replace(/^#/, "")) || null;
    view.selected = selectedFromHash();
    window.addEventListener("hashchange", () => { view.selected = selectedFromHash(); view.pending = null; view.message = null; refresh(); });

    let timer = null;
    const soon = () => { if (!timer) timer = setTimeout(() => { timer = null; refresh(); }, 150); };

    async function refresh() {
      try {
        const [l, k] = await Promise.all([api("GET", "/v1/rollouts"), api("GET", "/v1/kill-switch")]);
        view.rollouts = l.rollouts;
        view.kill = k.on;
        view.readError = null;
        if (!view.selected) {
          const first = sorted(view.rollouts)[0];
          if (first) view.selected = String(first.id);
        }
        const st = current();
        view.offset = st ? st.now_ms - Date.now() : 0;
        view.report = st ? await api("GET", `/v1/rollouts/${encodeURIComponent(view.selected)}/report`) : null;
      } catch (e) {
        view.readError = e;
      }
      render();
    }

    const sorted = (rs) => rs.slice().sort((a, b) =>
      (a.finished - b.finished) || ((b.finished_at_ms || b.created_at_ms) - (a.finished_at_ms || a.created_at_ms)));
    const current = () => view.rollouts.find((r) => String(r.id) === view.selected || r.name === view.selected);

    function render() {
      liveBadge.textContent = view.live ? "live" : "reconnecting";
      liveBadge.className = view.live ? "live on" : "live";
      fill(killBadge, view.kill === null ? "" : h("span", {},
        view.kill ? "Global kill switch ON: every request goes to stable " : "Global kill switch off ",
        h("button", { class: view.kill ? "" : "danger", "data-control": "global-kill",
          onclick: () => ask({ id: "global-kill", label: view.kill ? "Global kill switch off" : "Global kill switch on",
            url: "/v1/kill-switch", body: { on: !view.kill }, danger: !view.kill, what: view.kill
              ? "Lets every rollout split traffic by its weight again."
              : "Sends every request of every rollout to stable at once, until it is turned off." }) },
          view.kill ? "turn off" : "turn on")));
      if (view.readError && view.readError.status === 401) {
        tokenBar.hidden = false;
        const input = h("input", { type: "password", placeholder: "token", "data-role": "read-token", autocomplete: "off" });
        fill(tokenBar, `Reading needs a token (${view.readError.message}). `, input, " ",
          h("button", { onclick: () => { if (input.value.trim()) sessionStorage.setItem(TOKEN_KEY, input.value.trim()); connect(); refresh(); } }, "Use it"),
          h("span", { class: "muted" }, " Kept in this tab only (sessionStorage)."));
      } else {
        tokenBar.hidden = true;
      }
      renderList();
      renderDetail();
    }

    function renderList() {
      const rs = sorted(view.rollouts);
      const item = (r) => h("li", { class: String(r.id) === view.selected || r.name === view.selected ? "selected" : "",
        "data-rollout": r.name, "data-id": r.id, onclick: () => { location.hash = `#${r.id}`; } },
        h("div", {}, h("span", { class: "name" }, r.name), " ", h("span", { class: `state ${r.state}` }, r.state.replace("_", " "))),
        h("div", { class: "meta" }, `step ${r.step + 1}/${r.steps} · `,
          h("span", { "data-role": "weight" }, `${num(r.weight)}%`),
          r.finished ? ` · ended ${stamp(r.finished_at_ms)}` : [" · in step ", h("span", { "data-since": r.step_started_at_ms }, "")]));
      const active = rs.filter((r) => !r.finished), done = rs.filter((r) => r.finished);
      fill(list, h("h2", {}, "Rollouts"),
        view.readError && view.readError.status !== 401 ? h("p", { class: "message error" }, `Cannot read: ${view.readError.message}`) : null,
        h("div", { class: "section-label" }, "Active"),
        active.length ? h("ul", { class: "rollouts" }, active.map(item)) : h("p", { class: "nodata" }, "none"),
        h("div", { class: "section-label" }, "History"),
        done.length ? h("ul", { class: "rollouts" }, done.map(item)) : h("p", { class: "nodata" }, "none"));
      tick();
    }

    function renderDetail() {
      const st = current(), r = view.report;
      if (!st || !r) {
        fill(detail, h("div", { class: "card" }, h("p", { class: "nodata" },
          view.rollouts.length ? "Pick a rollout." : "No rollouts yet: create one with `linnet rollout create`.")));
        return;
      }
      const controls = controlsFor(st);
      fill(detail,
        h("div", { class: "card", "data-role": "rollout", "data-rollout": st.name },
          h("h2", {}, st.name, " ", h("span", { class: "muted" }, `step ${st.step + 1} of ${st.steps}, weight `),
            h("span", { "data-role": "detail-weight" }, `${num(st.weight)}%`),
            st.kill_switch ? h("span", { class: "state rolled_back" }, " kill switch on") : null),
          summary(r),
          st.finished ? null : h("p", { class: "muted" }, "In this step for ", h("span", { "data-since": st.step_started_at_ms }, ""),
            st.at_gate ? " · waiting to be promoted" : "",
            st.remaining_pause_ms !== null && st.remaining_pause_ms !== undefined ? ` · ${span(st.remaining_pause_ms)} of pause left when resumed` : ""),
          planList(st.spec, st.step, st.state),
          controls.length ? h("div", { class: "controls" }, controls.map((c) => h("button", {
            class: c.danger ? "danger" : "", "data-control": c.id,
            onclick: () => ask({ ...c, url: `/v1/rollouts/${encodeURIComponent(st.id)}/${c.path}` }) }, c.label))) : null,
          view.pending ? confirmBox(view.pending) : null,
          view.message ? h("p", { class: `message ${view.message.ok ? "ok" : "error"}`, "data-role": "message" }, view.message.text) : null,
          h("p", {}, h("button", { "data-control": "report", onclick: () => downloadReport(st) }, "Download evidence report"),
            h("span", { class: "muted" }, " one HTML file that opens with no server"))),
        h("div", { class: "card" }, h("h2", {}, "Canary against stable"), charts(r, st.finished ? st.finished_at_ms : st.now_ms)),
        h("div", { class: "card", "data-role": "timeline" }, h("h2", {}, "Checks and decisions"), timelineList(r.timeline)));
      tick();
    }

    // Fetched with the tab's token (a plain link could not send it), saved as one file.
    async function downloadReport(st) {
      try {
        const headers = { Accept: "text/html" };
        if (token()) headers.Authorization = `Bearer ${token()}`;
        const res = await fetch(`/v1/rollouts/${encodeURIComponent(st.id)}/report`, { headers, cache: "no-store", credentials: "omit" });
        if (!res.ok) throw new Error(`${res.status}: ${await res.text()}`);
        const url = URL.createObjectURL(await res.blob());
        const a = h("a", { href: url, download: `${st.name}-${st.id}.html` });
        document.body.appendChild(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 10000);
      } catch (e) {
        view.message = { ok: false, text: `The report could not be fetched: ${e.message}` };
        render();
      }
    }

    function ask(c) {
      view.pending = c;
      view.message = null;
      render();
    }

    function confirmBox(c) {
      const input = h("input", { type: "password", placeholder: "admin token", value: token(), "data-role": "token", autocomplete: "off" });
      return h("div", { class: "confirm", "data-role": "confirm" },
        h("p", { "data-role": "what" }, h("strong", {}, `${c.label}: `), c.what),
        h("p", {}, h("label", {}, "Token ", input), h("span", { class: "muted" }, " kept in this tab only")),
        h("button", { class: c.danger ? "danger" : "primary", "data-role": "confirm-button", onclick: async () => {
          const t = input.value.trim();
          view.pending = null;
          if (!t) {
            // Every change needs a token (the server fails closed): say so without sending.
            view.message = { ok: false, text: `${c.label} refused: every change needs a token (the admin token of \`linnet serve\`); nothing was sent.` };
            render();
            return;
          }
          sessionStorage.setItem(TOKEN_KEY, t);
          try {
            await api("POST", c.url, c.body === undefined ? {} : c.body);
            view.message = { ok: true, text: `${c.label}: done.` };
          } catch (e) {
            view.message = { ok: false, text: `${c.label} refused${e.status ? ` (HTTP ${e.status})` : ""}: ${e.message}` };
          }
          await refresh();
        } }, `Confirm: ${c.label}`), " ",
        h("button", { onclick: () => { view.pending = null; render(); } }, "Cancel"));
    }

    // Time in step, every second, from the server's clock.
    function tick() {
      const now = Date.now() + view.offset;
      for (const el of root.querySelectorAll("[data-since]")) el.textContent = span(now - Number(el.dataset.since));
    }
    setInterval(tick, 1000);

    // Live: every audit event refreshes the view. EventSource reconnects by itself after a
    // dropped stream (resuming with Last-Event-ID); a refused one is retried here.
    let source = null;
    function connect() {
      if (source) source.close();
      const q = new URLSearchParams({ last_event_id: "latest" });
      if (token()) q.set("token", token());
      source = new EventSource(`/v1/events?${q}`);
      source.onopen = () => { view.live = true; refresh(); };
      source.onerror = () => {
        view.live = false;
        render();
        if (source.readyState === EventSource.CLOSED) setTimeout(connect, 2000);
      };
      for (const k of KINDS) source.addEventListener(k, soon);
      source.onmessage = soon;
    }
    connect();
    refresh();
  }

  return { dashboard, showReport, chart };
})();

// fedledger dashboard: draws the plots from the page's embedded JSON (uPlot, vendored) and re-runs audits.
// No other requests: everything comes from this server.
"use strict";

function drawPlots() {
  const dataTag = document.getElementById("plot-data");
  if (!dataTag || typeof uPlot === "undefined") return;
  const data = JSON.parse(dataTag.textContent);
  for (const el of document.querySelectorAll(".plot[data-series]")) {
    const source = data[el.dataset.series] && data[el.dataset.series].round ? data[el.dataset.series] : data;
    const xs = source[el.dataset.x], ys = source[el.dataset.series];
    if (!xs || !ys || xs.length === 0) continue;
    const bars = el.dataset.bars === "1";
    const top = Math.max(...ys);
    const opts = {
      width: Math.max(320, el.clientWidth || 640), height: 220,
      scales: {
        x: {time: false, range: () => [xs[0] - 0.5, xs[xs.length - 1] + 0.5]},
        // accuracy and reputation live in [0, 1]; rewards start at 0 so bar heights compare
        y: {range: () => [0, el.dataset.bars === "1" ? (top > 0 ? top * 1.1 : 1) : Math.max(1, top)]},
      },
      axes: [
        {label: "round", incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
         values: (u, ticks) => ticks.map((t) => (Number.isInteger(t) ? String(t) : ""))},
        {label: el.dataset.label},
      ],
      series: [{label: "round"}, {
        label: el.dataset.label, stroke: "#2563eb", width: 2, fill: bars ? "rgba(37,99,235,0.35)" : undefined,
        points: {show: true, size: 6},
        paths: bars && uPlot.paths.bars ? uPlot.paths.bars({size: [0.6, 40]}) : undefined,
      }],
    };
    new uPlot(opts, [xs, ys], el);
    el.dataset.drawn = String(xs.length);
  }
}

function clock(unixSeconds) {
  return new Date(unixSeconds * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
}

function renderChecks(table, report) {
  const body = table.tBodies[0];
  body.replaceChildren();
  for (const round of report.rounds) {
    for (const check of round.checks) {
      const tr = document.createElement("tr");
      tr.dataset.round = round.round;
      tr.dataset.check = check.name;
      tr.className = check.ok ? "ok" : "failed";
      const cells = [String(round.round), check.name, check.ok ? "ok" : "FAILED", check.detail];
      cells.forEach((text, i) => {
        const td = document.createElement("td");
        td.textContent = text;
        if (i === 2) td.className = "result";
        if (i === 3) td.className = "detail";
        tr.appendChild(td);
      });
      body.appendChild(tr);
    }
  }
}

function wireAuditButton() {
  const button = document.getElementById("rerun-audit");
  if (!button) return;
  button.addEventListener("click", async () => {
    const verdict = document.getElementById("audit-verdict");
    const ranAt = document.getElementById("audit-ran-at");
    button.disabled = true;
    verdict.textContent = "auditing…";
    verdict.className = "";
    try {
      const response = await fetch(button.dataset.url, {headers: {Accept: "application/json"}});
      const report = await response.json();
      if (!response.ok) throw new Error(report.detail || response.statusText);
      renderChecks(document.getElementById("audit-checks"), report);
      verdict.textContent = report.verified ? "verified" : "FAILED";
      verdict.className = report.verified ? "ok" : "failed";
      ranAt.textContent = clock(Date.now() / 1000);
      const scope = document.getElementById("audit-scope");
      if (scope) scope.textContent = "every finalized round";
      button.dataset.runs = String(Number(button.dataset.runs || 0) + 1);
    } catch (err) {
      verdict.textContent = "audit failed to run: " + err.message;
      verdict.className = "failed";
    } finally {
      button.disabled = false;
    }
  });
}

document.addEventListener("DOMContentLoaded", () => {
  drawPlots();
  wireAuditButton();
});

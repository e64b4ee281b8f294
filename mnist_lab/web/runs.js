"use strict";
// The stored runs, newest first, with a link to the report of each run's study when one exists.

const percent = (x) => (x == null ? "—" : `${(100 * x).toFixed(2)}%`);
const minute = (iso) => iso.slice(0, 16).replace("T", " ");  // 2026-11-21T23:14:07+00:00

async function showRuns() {
  const note = document.getElementById("status");
  const rows = document.querySelector("#runs tbody");
  try {
    const response = await fetch("/runs.json");
    const { runs } = await response.json();
    for (const run of runs.slice().reverse()) {
      const row = rows.insertRow();
      row.dataset.id = run.id;
      const cells = [run.id, run.study || "", run.model, run.dataset, run.status,
        percent(run.test_accuracy), minute(run.created)];
      for (const text of cells) row.insertCell().textContent = text;
      const cell = row.insertCell();
      if (run.report) {
        const link = document.createElement("a");
        link.href = run.report;
        link.textContent = "report";
        cell.append(link);
      }
    }
    note.textContent = `${runs.length} run(s)`;
  } catch (err) {
    note.textContent = `Could not load the runs: ${err.message}`;
  }
}

showRuns();

// The tenant's jobs with status and progress; refreshed while any of them is still active.

import { get } from "../api.js";
import { clear, fmtTime, h } from "../dom.js";

const ACTIVE = new Set(["queued", "running", "cancelling"]);
const REFRESH_MS = 3000;

export function percentOf(job) {
  if (job.status === "succeeded") return 100;
  const { step, total_steps: total } = job.progress;
  return total ? Math.min(100, Math.round((100 * step) / total)) : 0;
}

export function progressCell(job) {
  const percent = percentOf(job);
  return h(
    "div",
    { class: "progress-cell" },
    h("progress", { max: 100, value: percent, "aria-label": `progress of ${job.id}` }),
    h("span", { class: "progress-text" }, `${percent} %`),
  );
}

export function statusBadge(status) {
  return h("span", { class: `badge status-${status}` }, status);
}

function row(job) {
  const request = job.request;
  return h(
    "tr",
    { dataset: { jobId: job.id } },
    h("th", { scope: "row" }, h("a", { href: `#/jobs/${encodeURIComponent(job.id)}` }, job.id)),
    h("td", {}, request.model.id),
    h("td", {}, request.method),
    h("td", {}, request.sparsities.join(", ")),
    h("td", {}, statusBadge(job.status)),
    h("td", {}, progressCell(job)),
    h("td", {}, fmtTime(job.created_at)),
  );
}

export function renderJobs(main) {
  const body = h("tbody");
  const status = h("p", { class: "muted", role: "status" }, "Loading…");
  const more = h("button", { type: "button", hidden: true }, "Load more");
  const refresh = h("button", { type: "button", class: "secondary" }, "Refresh");
  let cursor = null;
  let timer = null;
  let stopped = false;

  async function load(append) {
    try {
      const page = await get(`/v1/jobs?limit=25${append && cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
      if (stopped) return;
      if (!append) clear(body);
      page.data.forEach((job) => body.append(row(job)));
      cursor = page.next_cursor;
      more.hidden = !cursor;
      status.textContent = body.children.length ? "" : "No jobs yet.";
      const active = page.data.some((job) => ACTIVE.has(job.status));
      clearTimeout(timer);
      if (active && !append) timer = setTimeout(() => load(false), REFRESH_MS);
    } catch (error) {
      if (!stopped) status.textContent = `Could not load the jobs: ${error.message}`;
    }
  }

  more.addEventListener("click", () => load(true));
  refresh.addEventListener("click", () => load(false));
  main.append(
    h("div", { class: "page-head" }, h("h1", {}, "Jobs"), h("div", { class: "actions" }, refresh, h("a", { class: "button", href: "#/submit" }, "New job"))),
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        { class: "jobs" },
        h("caption", { class: "visually-hidden" }, "Your pruning jobs, newest first"),
        h(
          "thead",
          {},
          h("tr", {}, ...["Job", "Model", "Method", "Sparsities", "Status", "Progress", "Created"].map((t) => h("th", { scope: "col" }, t))),
        ),
        body,
      ),
    ),
    status,
    more,
  );
  load(false);
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

// Loading the jobs list from GET /api/jobs: the first page (again whenever the stream says to),
// older pages on request, and what shows below the table (the empty note, "Load older jobs").
// Events that arrive while a page loads are held, then applied on top of it.

import { api } from "./api.js";
import { clear, h, setText } from "./dom.js";
import { anyFilter } from "./jobs-filters.js";
import { sortKey } from "./jobs-row.js";
import { announce } from "./toast.js";

const LIMIT = 50;

/**
 * `apply(type, data)` applies one held event; `onWindowChange()` is called when the range of
 * jobs the table covers changed (a fresh first page, or an older page added).
 */
export function jobsLoader({ filters, table, apply, onWindowChange }) {
  let disposed = false;
  let loading = true;
  let buffer = [];
  let next = null; // the cursor of the next older page: null none, "" some but no cursor
  let reloadGen = 0;
  let reloadAgain = false;
  let reloading = false;
  let loadedOnce = false;

  const errorBox = h("p", { class: "banner banner-error", role: "alert", hidden: true });
  const empty = h("p", { class: "empty", hidden: true });
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "Load older jobs");
  const moreBox = h("div", { class: "more" }, more);

  function updateEmpty() {
    const any = table.size > 0;
    empty.hidden = any || loading;
    if (!any) {
      clear(empty);
      empty.append(
        anyFilter(filters) ? "No jobs match these filters. " : "No jobs yet. ",
        h("a", { href: "/?view=new" }, "Submit one"),
        " and watch it here.",
      );
    }
    more.hidden = !next;
  }

  async function reload() {
    if (reloading) {
      reloadAgain = true;
      return;
    }
    reloading = true;
    loading = true;
    const gen = ++reloadGen;
    try {
      const res = await api.jobs({ ...filters, limit: LIMIT });
      if (disposed || gen !== reloadGen) return;
      onWindowChange();
      errorBox.hidden = true;
      table.replace(res.jobs);
      next = res.next;
      loadedOnce = true;
    } catch (e) {
      if (disposed) return;
      errorBox.hidden = false;
      setText(errorBox, `Could not load jobs: ${e.message}`);
    } finally {
      reloading = false;
      loading = false;
      const pending = buffer;
      buffer = [];
      if (!disposed) {
        for (const [t, d] of pending) apply(t, d);
        updateEmpty();
        if (reloadAgain) {
          reloadAgain = false;
          reload();
        }
      }
    }
  }

  async function loadMore() {
    if (!next) return;
    more.disabled = true;
    try {
      const res = await api.jobs({ ...filters, limit: LIMIT, cursor: next });
      for (const job of res.jobs) if (!table.has(job.id)) table.add(job);
      next = res.next;
      onWindowChange();
    } catch (e) {
      announce(`Could not load more jobs: ${e.message}`, "error");
    } finally {
      more.disabled = false;
      updateEmpty();
    }
  }
  more.addEventListener("click", loadMore);

  return {
    errorBox,
    empty,
    moreBox,
    reload,
    updateEmpty,
    /** True until the first page (after a restart()) is in. */
    get loading() {
      return loading;
    },
    get loadedOnce() {
      return loadedOnce;
    },
    /** Hold an event until the page being loaded is in. */
    hold(type, data) {
      buffer.push([type, data]);
    },
    /** A new stream starts: hold its events until the next reload is done. */
    restart() {
      loading = true;
      buffer = [];
    },
    /** The filters changed: older pages are those of the next reload. */
    forgetCursor() {
      next = null;
    },
    /** The table dropped its oldest row to make room. */
    noteEvicted() {
      if (next === null) next = "";
    },
    /** Whether `job` falls in the range of jobs the table covers (newer than its oldest row). */
    inWindow(job) {
      if (table.size < LIMIT || next === null) return true;
      const oldest = table.oldest();
      return !oldest || sortKey(job) >= sortKey(oldest);
    },
    dispose() {
      disposed = true;
    },
  };
}

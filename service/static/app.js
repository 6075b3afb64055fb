// Tidings dashboard: a small single-page app. Routes on location.pathname (and ?view=):
//   /                    jobs list (?q=&state=&task=&queue=&since=&until= filters)
//   /?view=new&task=T    submit form
//   /?view=dead&queue=Q  dead letters of a queue
//   /?view=queues        queues: live figures, pause and resume, retry and purge
//   /?view=workers       live worker processes
//   /?view=trend         throughput and wait/run times over the last hour
//   /jobs/{id}           one job
// With auth on and no session, a sign-in form stands in for whatever the URL names, which is
// shown once signed in; a 401 later brings the form back without touching the URL.

import { tickAges } from "./age.js";
import { api, onUnauthorized, session } from "./api.js";
import { mountDead } from "./dead-view.js";
import { clear, h } from "./dom.js";
import { mountJob } from "./job-view.js";
import { mountJobs } from "./jobs-view.js";
import { mountQueues } from "./queues-view.js";
import { mountSignIn } from "./signin-view.js";
import { mountSubmit } from "./submit-view.js";
import { announce } from "./toast.js";
import { mountTrend } from "./trend-view.js";
import { mountWorkers } from "./workers-view.js";

const JOB_PATH = /^\/jobs\/([0-9A-Za-z_-]{1,64})\/?$/;
const main = document.getElementById("main");
const mainNav = document.getElementById("main-nav");
const signOutBtn = document.getElementById("signout");
let current = null;
let gate = null; // the sign-in form, while it is shown

const nav = {
  go(url) {
    history.pushState(null, "", url);
    render(true);
  },
  replace(url) {
    history.replaceState(null, "", url);
    markNav();
  },
};

function route() {
  const path = location.pathname;
  const params = new URLSearchParams(location.search);
  const job = JOB_PATH.exec(path);
  if (job) return { name: "job", mount: (root) => mountJob(root, decodeURIComponent(job[1])) };
  if (path === "/" || path === "/index.html") {
    const view = params.get("view");
    if (view === "new") return { name: "new", mount: (root) => mountSubmit(root, params, nav) };
    if (view === "dead") return { name: "dead", mount: (root) => mountDead(root, params, nav) };
    if (view === "queues") return { name: "queues", mount: (root) => mountQueues(root) };
    if (view === "workers") return { name: "workers", mount: (root) => mountWorkers(root) };
    if (view === "trend") return { name: "trend", mount: (root) => mountTrend(root, params, nav) };
    return { name: "jobs", mount: (root) => mountJobs(root, params, nav) };
  }
  return {
    name: "missing",
    mount: (root) => {
      const heading = h("h1", { tabindex: "-1" }, "Page not found");
      root.append(h("section", { class: "view" }, heading, h("p", null, h("a", { href: "/" }, "Back to the jobs"))));
      return { title: "Not found", focus: heading, dispose() {} };
    },
  };
}

function markNav() {
  const r = route().name;
  for (const a of document.querySelectorAll("[data-nav]")) {
    if (a.dataset.nav === r) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function render(moveFocus) {
  if (gate) return; // the route is shown once signed in
  if (current) current.dispose();
  current = null;
  clear(main);
  const r = route();
  current = r.mount(main);
  document.title = `${current.title} · Tidings`;
  markNav();
  if (moveFocus && current.focus) current.focus.focus({ preventScroll: true });
  if (moveFocus) window.scrollTo(0, 0);
}

// in-app links: same-origin <a href> to one of our routes, without modifier keys
document.addEventListener("click", (ev) => {
  if (ev.defaultPrevented || ev.button !== 0 || ev.metaKey || ev.ctrlKey || ev.shiftKey || ev.altKey) return;
  const a = ev.target instanceof Element ? ev.target.closest("a[href]") : null;
  if (!a || a.target || a.hasAttribute("download")) return;
  const url = new URL(a.href, location.href);
  if (url.origin !== location.origin) return;
  if (url.pathname === location.pathname && url.search === location.search && url.hash) return; // in-page anchor
  if (!(url.pathname === "/" || JOB_PATH.test(url.pathname))) return;
  ev.preventDefault();
  nav.go(url.pathname + url.search);
});

// -- auth ---------------------------------------------------------------------------------------------
function showChrome() {
  mainNav.hidden = false;
  signOutBtn.hidden = !session.auth;
}

function showSignIn(reason) {
  if (gate) return;
  if (current) current.dispose(); // ends its streams and timers
  current = null;
  clear(main);
  mainNav.hidden = true;
  signOutBtn.hidden = true;
  gate = mountSignIn(main, {
    reason,
    onSignedIn() {
      gate.dispose();
      gate = null;
      showChrome();
      render(true);
    },
  });
  document.title = `${gate.title} · Tidings`;
  gate.focus.focus({ preventScroll: true });
}

onUnauthorized(() => showSignIn("expired"));

signOutBtn.addEventListener("click", async () => {
  signOutBtn.disabled = true;
  try {
    await api.signOut();
    showSignIn("signed-out");
  } catch (e) {
    announce(`Could not sign out: ${e.message}`, "error");
  } finally {
    signOutBtn.disabled = false;
  }
});

async function start() {
  try {
    await api.session();
  } catch (e) {
    // unreachable (or a service without sessions): show the page; its own errors tell, and a 401
    // brings the sign-in form
  }
  if (session.auth && !session.signedIn) {
    showSignIn(null);
  } else {
    showChrome();
    render(false);
  }
}

window.addEventListener("popstate", () => render(true));
setInterval(() => tickAges(main), 1000);
start();

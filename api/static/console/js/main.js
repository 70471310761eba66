// The console's router: #/signin, #/jobs, #/submit, #/jobs/<id>. Each page renders into <main> and returns
// a cleanup function (closing its event stream and timers) that runs when the user navigates away.

import { forgetKey, getKey } from "./api.js";
import { clear } from "./dom.js";
import { renderJob } from "./pages/job.js";
import { renderJobs } from "./pages/jobs.js";
import { renderSignIn } from "./pages/signin.js";
import { renderSubmit } from "./pages/submit.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
let cleanup = null;

function route() {
  const hash = location.hash.replace(/^#/, "") || "/jobs";
  if (cleanup) {
    cleanup();
    cleanup = null;
  }
  clear(main);
  const signedIn = Boolean(getKey());
  nav.hidden = !signedIn;
  if (!signedIn && hash !== "/signin") {
    sessionStorage.setItem("gisp.next", hash);
    location.replace("#/signin");
    return;
  }
  let match;
  if (hash === "/signin") cleanup = renderSignIn(main);
  else if (hash === "/submit") cleanup = renderSubmit(main);
  else if ((match = hash.match(/^\/jobs\/([^/]+)$/))) cleanup = renderJob(main, decodeURIComponent(match[1]));
  else cleanup = renderJobs(main);
  const heading = main.querySelector("h1");
  if (heading) document.title = `${heading.textContent} · GISP console`;
  if (!main.contains(document.activeElement)) main.focus({ preventScroll: true });
}

document.getElementById("sign-out").addEventListener("click", () => {
  forgetKey();
  location.hash = "#/signin";
});

window.addEventListener("gisp:unauthorized", () => {
  forgetKey();
  if (location.hash !== "#/signin") location.hash = "#/signin";
});

window.addEventListener("hashchange", route);
route();

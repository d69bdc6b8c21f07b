// Live updates for the atoll dashboard: on pages marked data-refresh, the
// parts marked data-live are fetched again every few seconds; a run's log
// streams over server-sent events. Nothing here changes anything on the server.
"use strict";

function refresh(main) {
  const every = Number(main.dataset.refresh);
  if (!every) return;
  setInterval(async () => {
    try {
      const resp = await fetch(location.href, { headers: { "X-Partial": "1" }, credentials: "same-origin", redirect: "manual" });
      if (resp.type === "opaqueredirect" || resp.status === 401) { location.href = "/login"; return; }
      if (!resp.ok) return;
      // Only the parts marked data-live are swapped: a run's log keeps
      // streaming untouched.
      const fresh = new DOMParser().parseFromString(await resp.text(), "text/html");
      for (const old of document.querySelectorAll("[data-live]")) {
        const now = fresh.getElementById(old.id);
        if (now) old.replaceWith(now);
      }
    } catch (e) { /* the server may be restarting: try again next time */ }
  }, every);
}

function streamLog(pre) {
  const source = new EventSource(pre.dataset.events);
  const show = (s) => {
    const status = document.getElementById("run-status"); // refreshed in place: look it up each time
    if (status && s) { status.textContent = s; status.className = "status " + s; }
  };
  source.addEventListener("line", (ev) => {
    const e = JSON.parse(ev.data);
    const span = document.createElement("span");
    span.className = e.stream;
    span.textContent = e.data;
    const atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
    pre.appendChild(span);
    if (atEnd) pre.scrollTop = pre.scrollHeight;
  });
  source.addEventListener("status", (ev) => show(JSON.parse(ev.data).status));
  source.addEventListener("end", (ev) => {
    show(JSON.parse(ev.data).status);
    pre.dataset.done = "1";
    source.close();
  });
}

document.addEventListener("DOMContentLoaded", () => {
  const main = document.getElementById("content");
  if (main) refresh(main);
  const pre = document.getElementById("log");
  if (pre) streamLog(pre);
});

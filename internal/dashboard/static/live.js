// Live updates for the atoll dashboard: pages marked data-refresh swap in
// their content every few seconds; a run's log streams over server-sent
// events. Nothing here changes anything on the server.
"use strict";

function refresh(main) {
  const every = Number(main.dataset.refresh);
  if (!every || document.getElementById("log")) return; // a run page streams instead
  setInterval(async () => {
    try {
      const resp = await fetch(location.href, { headers: { "X-Partial": "1" }, credentials: "same-origin", redirect: "manual" });
      if (resp.type === "opaqueredirect" || resp.status === 401) { location.href = "/login"; return; }
      if (resp.ok) main.innerHTML = await resp.text();
    } catch (e) { /* the server may be restarting: try again next time */ }
  }, every);
}

function streamLog(pre) {
  const status = document.getElementById("run-status");
  const source = new EventSource(pre.dataset.events);
  const show = (s) => { if (status && s) { status.textContent = s; status.className = "status " + s; } };
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

// Conveyor console: live panels and confirmations. No framework, no build.
// Every few seconds the page asks its own URL for its live panels (JSON of HTML the server
// rendered and escaped) and swaps them in. Forms with typed input live outside those panels.
(() => {
  "use strict";
  const every = Number(document.body.dataset.refresh || 0) * 1000;
  const status = document.getElementById("live-status");
  const toggle = document.getElementById("live-toggle");
  let paused = false;
  let busy = false;

  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (form instanceof HTMLFormElement && form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
    }
  });

  function say(text) {
    if (status) status.textContent = text;
  }

  function typingInPanel() {
    const active = document.activeElement;
    return active instanceof HTMLElement && active.closest("[data-live]") !== null &&
      active.matches("input, select, textarea");
  }

  function swap(panel, html) {
    const open = new Set();
    for (const details of panel.querySelectorAll("details[open][data-key]")) open.add(details.dataset.key);
    panel.innerHTML = html;
    for (const details of panel.querySelectorAll("details[data-key]")) {
      if (open.has(details.dataset.key)) details.open = true;
    }
  }

  async function refresh() {
    if (paused || busy || document.hidden || typingInPanel()) return;
    busy = true;
    try {
      const response = await fetch(window.location.href, {
        headers: { "X-Console-Panels": "1" },
        credentials: "same-origin",
        cache: "no-store",
      });
      if (response.status === 401) {
        window.location.reload();
        return;
      }
      const data = await response.json();
      if (!response.ok) {
        say(`not updated: ${data.error || response.status}`);
        return;
      }
      for (const [id, html] of Object.entries(data.panels)) {
        const panel = document.getElementById(id);
        if (panel) swap(panel, html);
      }
      say(`updated ${new Date().toLocaleTimeString()}`);
    } catch (error) {
      say("server unreachable");
    } finally {
      busy = false;
    }
  }

  if (every > 0) {
    say("live");
    if (toggle) {
      toggle.hidden = false;
      toggle.addEventListener("click", () => {
        paused = !paused;
        toggle.textContent = paused ? "Resume" : "Pause";
        say(paused ? "paused" : "live");
        if (!paused) refresh();
      });
    }
    window.setInterval(refresh, every);
  }
})();

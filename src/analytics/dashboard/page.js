// memgate analytics dashboard: optional enhancements. Every feature also
// works without this script (server-rendered numbers and graphs, forms,
// a confirmation page for flush).
"use strict";

document.documentElement.classList.add("js");

// Swap the graphs section in place when a series is picked; the URL keeps
// the choice so a reload shows the same graphs.
function watchGraphs() {
  const section = document.getElementById("graphs");
  if (!section) return;
  section.addEventListener("change", async (event) => {
    if (!(event.target instanceof HTMLSelectElement)) return;
    const form = section.querySelector("form.pick");
    const params = new URLSearchParams(new FormData(form));
    const base = form.getAttribute("action");
    try {
      const reply = await fetch(base + "/graphs?" + params, { credentials: "same-origin" });
      if (!reply.ok) throw new Error("HTTP " + reply.status);
      const holder = document.createElement("div");
      holder.innerHTML = await reply.text();
      const fresh = holder.querySelector("#graphs");
      if (!fresh) throw new Error("no graphs in reply");
      section.replaceWith(fresh);
      history.replaceState(null, "", base + "?" + params);
      watchGraphs();
    } catch (error) {
      // Fall back to the plain form: a full page load.
      form.submit();
    }
  });
}

// Ask before destructive actions. The flush form then says confirm=yes, so
// the server's own confirmation page is skipped.
function confirmations() {
  const flush = document.getElementById("flush");
  if (flush) {
    flush.addEventListener("submit", (event) => {
      if (!window.confirm("Flush the cache? Every item is removed on every node.")) {
        event.preventDefault();
        return;
      }
      const yes = document.createElement("input");
      yes.type = "hidden";
      yes.name = "confirm";
      yes.value = "yes";
      flush.appendChild(yes);
    });
  }
  for (const form of document.querySelectorAll("form.delete")) {
    form.addEventListener("submit", (event) => {
      const name = form.dataset.username || "this credential";
      if (!window.confirm("Delete credential " + name + "?")) event.preventDefault();
    });
  }
}

watchGraphs();
confirmations();

// kenpin console: puts the server's rendered fragments in place as events arrive.
// No framework, no build: the HTML comes from the server's own templates.
(function () {
  "use strict";

  function fragment(html) {
    const template = document.createElement("template");
    template.innerHTML = html.trim();
    return template.content.firstElementChild;
  }

  function byId(id) {
    return document.getElementById(id);
  }

  // Live verdicts: a line's section, replaced whole; an NG frame's card, put first.
  const live = document.querySelector("[data-live-events]");
  if (live) {
    const status = byId("feed-status");
    const lines = byId("lines");
    const gallery = byId("gallery");
    const source = new EventSource(live.dataset.liveEvents);
    source.onopen = function () {
      status.textContent = "live";
      status.dataset.state = "live";
    };
    source.onerror = function () {
      status.textContent = "reconnecting";
      status.dataset.state = "reconnecting";
    };
    source.addEventListener("line", function (event) {
      const data = JSON.parse(event.data);
      const section = fragment(data.html);
      const existing = byId("line-" + data.line);
      if (existing) {
        existing.replaceWith(section);
      } else {
        const empty = byId("no-lines");
        if (empty) empty.remove();
        lines.appendChild(section);
      }
    });
    source.addEventListener("ng", function (event) {
      const data = JSON.parse(event.data);
      const old = byId("ng-" + data.frame_id);
      if (old) old.remove();
      gallery.prepend(fragment(data.html));
      const size = parseInt(gallery.dataset.size || "12", 10);
      while (gallery.children.length > size) gallery.lastElementChild.remove();
    });
  }

  // A retrain's status: replaced as the trainer moves through its stages.
  const retrain = document.querySelector("[data-status-events]");
  if (retrain) {
    const source = new EventSource(retrain.dataset.statusEvents);
    source.addEventListener("status", function (event) {
      const data = JSON.parse(event.data);
      retrain.innerHTML = data.html;
      if (data.final) source.close();
    });
  }

  // A heatmap is stored shortly after its verdict: retry a missing one a few times.
  document.addEventListener("error", function (event) {
    const img = event.target;
    if (!(img instanceof HTMLImageElement) || !img.dataset.retry) return;
    const tries = parseInt(img.dataset.retry, 10);
    if (tries > 10) return;
    img.dataset.retry = String(tries + 1);
    const base = img.getAttribute("src").split("?")[0];
    window.setTimeout(function () { img.src = base + "?try=" + tries; }, 2000);
  }, true);
})();

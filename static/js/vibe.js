// Vibe Factory dashboard: the auto-refresh switch, the detail panel's Close link, and
// readable messages when an htmx request fails. Everything here is optional: without
// JavaScript the pages are plain links and forms.
(function () {
  "use strict";
  var KEY = "vibe:auto-refresh-paused";

  function storedPaused() {
    try { return window.localStorage.getItem(KEY) === "1"; } catch (e) { return false; }
  }

  window.vibePaused = storedPaused();

  // Polls run only while the tab is visible and the person has not paused them.
  window.vibeShouldPoll = function () {
    return document.visibilityState === "visible" && !window.vibePaused;
  };

  function paintToggle(button) {
    button.setAttribute("aria-pressed", window.vibePaused ? "true" : "false");
    button.textContent = window.vibePaused ? "Auto-refresh paused" : "Pause auto-refresh";
    document.documentElement.classList.toggle("refresh-paused", window.vibePaused);
  }

  function refreshNow() {
    if (!window.htmx) { return; }
    document.querySelectorAll("[data-refresh-on-visible]").forEach(function (el) {
      window.htmx.trigger(el, "vibe:refresh");
    });
  }

  function showMessage(text, level) {
    var box = document.getElementById("messages");
    if (!box) { return; }
    var p = document.createElement("p");
    p.className = "message message-" + (level || "error");
    p.textContent = text;
    box.replaceChildren(p);
  }

  document.addEventListener("DOMContentLoaded", function () {
    var toggle = document.getElementById("refresh-toggle");
    if (toggle) {
      toggle.hidden = false;
      paintToggle(toggle);
      toggle.addEventListener("click", function () {
        window.vibePaused = !window.vibePaused;
        try { window.localStorage.setItem(KEY, window.vibePaused ? "1" : "0"); } catch (e) { /* private mode */ }
        paintToggle(toggle);
        if (!window.vibePaused) { refreshNow(); }
      });
    }
  });

  // Coming back to the tab: catch up at once instead of waiting for the next tick.
  document.addEventListener("visibilitychange", function () {
    if (window.vibeShouldPoll()) { refreshNow(); }
  });

  // Close the task panel in place and put the board's own URL (with its filters) back.
  document.addEventListener("click", function (event) {
    var link = event.target.closest("[data-close-detail]");
    var pane = document.getElementById("detail");
    if (!link || !pane || !pane.contains(link)) { return; }
    event.preventDefault();
    pane.replaceChildren();
    window.history.pushState({}, "", link.getAttribute("href"));
    var card = document.getElementById("card-link-" + (link.dataset.taskId || ""));
    if (card) { card.focus(); }
  });

  // A poll that was in flight while a button changed the board carries the state from before
  // the click; swapping it in would put a retried card back in the dead-letter column for one
  // refresh. Such a poll's answer is dropped; the next one is fresh. (Events fire on the swap
  // target, so the element that sent a request is read from its requestConfig.)
  var actions = 0;
  function sender(event) {
    var config = event.detail.requestConfig;
    return config ? config.elt : null;
  }
  function isPoll(elt) {
    return Boolean(elt && elt.hasAttribute && elt.hasAttribute("data-refresh-on-visible"));
  }
  function countAction(event) {
    var config = event.detail.requestConfig;
    if (config && !isPoll(config.elt) && config.verb && config.verb !== "get") { actions += 1; }
  }
  document.addEventListener("htmx:beforeRequest", function (event) {
    var elt = sender(event);
    if (isPoll(elt)) { elt.vibeActionsSeen = actions; }
    countAction(event);
  });
  document.addEventListener("htmx:afterRequest", countAction);
  document.addEventListener("htmx:beforeSwap", function (event) {
    var elt = sender(event);
    if (isPoll(elt) && elt.vibeActionsSeen !== actions) { event.detail.shouldSwap = false; }
  });

  // After a button's card or row was swapped away, keep keyboard focus somewhere useful: the
  // task's card in its new column, or else the message that says what happened.
  document.addEventListener("htmx:afterSettle", function (event) {
    var config = event.detail.requestConfig;
    if (!config || config.verb === "get") { return; }
    var active = document.activeElement;
    if (active && active !== document.body && document.body.contains(active)) { return; }
    var match = /\/tasks\/(\d+)\//.exec(config.path || "");
    var card = match && document.getElementById("card-link-" + match[1]);
    var box = document.getElementById("messages");
    if (card) {
      card.focus();
    } else if (box) {
      box.setAttribute("tabindex", "-1");
      box.focus();
    }
  });

  document.addEventListener("htmx:responseError", function (event) {
    var status = event.detail.xhr ? event.detail.xhr.status : 0;
    if (status === 403) {
      showMessage("You are not allowed to do that; nothing was changed. Reload the page to see what you may do.");
    } else if (status === 404) {
      showMessage("That task or worker no longer exists; reload the page.");
    } else {
      showMessage("The server could not answer (" + status + "); nothing was changed. Try again in a moment.");
    }
  });

  document.addEventListener("htmx:sendError", function () {
    showMessage("The server could not be reached; the board will catch up when it is back.", "warning");
  });
})();

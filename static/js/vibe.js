// Vibe Factory dashboard: the refresh interval and theme (remembered per browser), the task
// drawer (focus in on open, back to the card on close, Escape), the board's filters (selects
// apply on change, not per arrow key; the form follows the URL on Back), in-page confirmation
// dialogs, and readable messages when an htmx request fails. Everything here is optional:
// without JavaScript the pages are plain links and forms.
(function () {
  "use strict";
  var REFRESH_KEY = "vibe:refresh-seconds";
  var OLD_PAUSE_KEY = "vibe:auto-refresh-paused";
  var THEME_KEY = "vibe:theme";
  var INTERVALS = ["0", "5", "10", "30"];

  function stored(key) {
    try { return window.localStorage.getItem(key); } catch (e) { return null; }
  }
  function store(key, value) {
    try { window.localStorage.setItem(key, value); } catch (e) { /* private mode */ }
  }

  // --- Refresh interval: off, 5, 10 or 30 seconds ----------------------------------------------
  // The live regions tick on their own clocks (the board every 5 s); a tick only asks the
  // server when the region is older than the chosen interval, so 10 and 30 s need no other
  // markup. Off (or window.vibePaused, which tests set) stops every poll.
  function storedSeconds() {
    var value = stored(REFRESH_KEY);
    if (INTERVALS.indexOf(value) !== -1) { return Number(value); }
    return stored(OLD_PAUSE_KEY) === "1" ? 0 : 5;
  }

  window.vibeRefreshSeconds = storedSeconds();
  window.vibePaused = window.vibeRefreshSeconds === 0;

  window.vibeShouldPoll = function (elt) {
    if (document.visibilityState !== "visible" || window.vibePaused) { return false; }
    if (!elt || !elt.vibeBorn) { return true; }
    // A second of slack: the region's own timer started a moment after it was born.
    return Date.now() - elt.vibeBorn >= window.vibeRefreshSeconds * 1000 - 1000;
  };

  function markBorn(root) {
    if (!root || !root.querySelectorAll) { return; }
    var now = Date.now();
    if (root.hasAttribute && root.hasAttribute("data-refresh-on-visible")) { root.vibeBorn = now; }
    root.querySelectorAll("[data-refresh-on-visible]").forEach(function (el) { el.vibeBorn = now; });
  }

  function paintRefresh() {
    var select = document.getElementById("refresh-interval");
    if (select) {
      select.value = String(window.vibeRefreshSeconds);
      select.closest(".refresh-setting").hidden = false;
    }
    document.documentElement.classList.toggle("refresh-paused", window.vibePaused);
  }

  function refreshNow() {
    if (!window.htmx) { return; }
    document.querySelectorAll("[data-refresh-on-visible]").forEach(function (el) {
      window.htmx.trigger(el, "vibe:refresh");
    });
  }

  document.addEventListener("change", function (event) {
    if (event.target.id !== "refresh-interval") { return; }
    var value = event.target.value;
    if (INTERVALS.indexOf(value) === -1) { return; }
    window.vibeRefreshSeconds = Number(value);
    window.vibePaused = window.vibeRefreshSeconds === 0;
    store(REFRESH_KEY, value);
    paintRefresh();
    document.dispatchEvent(new CustomEvent("vibe:refresh-setting"));
    if (!window.vibePaused) { refreshNow(); }
  });

  // Coming back to the tab: catch up at once instead of waiting for the next tick.
  document.addEventListener("visibilitychange", function () {
    if (window.vibeShouldPoll()) { refreshNow(); }
  });

  // --- Theme: the system's, until the person picks one -----------------------------------------
  // theme.js (in the head, before the stylesheet paints) sets data-theme; this is the toggle.
  function effectiveTheme() {
    return document.documentElement.getAttribute("data-theme") === "dark" ? "dark" : "light";
  }
  function paintTheme() {
    var button = document.getElementById("theme-toggle");
    if (!button) { return; }
    button.hidden = false;
    button.setAttribute("aria-pressed", effectiveTheme() === "dark" ? "true" : "false");
  }
  document.addEventListener("click", function (event) {
    if (!event.target.closest || !event.target.closest("#theme-toggle")) { return; }
    var next = effectiveTheme() === "dark" ? "light" : "dark";
    document.documentElement.setAttribute("data-theme", next);
    store(THEME_KEY, next);
    paintTheme();
  });
  if (window.matchMedia) {
    var darkQuery = window.matchMedia("(prefers-color-scheme: dark)");
    var follow = function () {
      if (stored(THEME_KEY)) { return; }
      document.documentElement.setAttribute("data-theme", darkQuery.matches ? "dark" : "light");
      paintTheme();
    };
    if (darkQuery.addEventListener) { darkQuery.addEventListener("change", follow); }
  }

  function showMessage(text, level) {
    var box = document.getElementById("messages");
    if (!box) { return; }
    var p = document.createElement("p");
    p.className = "message message-" + (level || "error");
    p.textContent = text;
    box.replaceChildren(p);
  }

  // --- The task drawer --------------------------------------------------------------------------
  function pane() { return document.getElementById("detail"); }

  function focusDrawer() {
    var title = document.querySelector("#detail #detail-title");
    if (title) { title.focus({ preventScroll: false }); }
  }

  function cardLinkFor(taskId) {
    return document.getElementById("card-link-" + taskId) ||
      document.querySelector("#dlq-row-" + taskId + " a");
  }

  // Close the drawer in place, put the board's own URL (with its filters) back, and give focus
  // back to the card it was opened from (or the main region when that card has moved away).
  function closeDrawer(link) {
    var box = pane();
    if (!box || !box.firstElementChild) { return false; }
    link = link || box.querySelector("[data-close-detail]");
    var taskId = link ? link.dataset.taskId : box.dataset.openedFrom;
    box.replaceChildren();
    if (link) { window.history.pushState({}, "", link.getAttribute("href")); }
    var card = cardLinkFor(taskId || "") || cardLinkFor(box.dataset.openedFrom || "");
    if (card) { card.focus(); } else { document.getElementById("main").focus(); }
    return true;
  }

  document.addEventListener("click", function (event) {
    var link = event.target.closest("[data-close-detail]");
    var box = pane();
    if (!link || !box || !box.contains(link)) { return; }
    event.preventDefault();
    closeDrawer(link);
  });

  document.addEventListener("keydown", function (event) {
    if (event.key !== "Escape" || event.defaultPrevented) { return; }
    if (document.querySelector("dialog[open]")) { return; }  // the dialog closes first
    var target = event.target;
    // Escape in a comment being written clears nothing and closes nothing.
    if (target && target.tagName === "TEXTAREA" && target.value) { return; }
    if (closeDrawer()) { event.preventDefault(); }
  });

  document.addEventListener("htmx:beforeRequest", function (event) {
    var config = event.detail.requestConfig;
    var box = pane();
    if (!box || !config || config.verb !== "get" || !config.target || config.target !== box) { return; }
    var match = /\/tasks\/(\d+)\//.exec(config.path || "");
    if (match) { box.dataset.openedFrom = match[1]; }
  });

  document.addEventListener("htmx:afterSettle", function (event) {
    var box = pane();
    if (box && event.detail.target === box && box.firstElementChild) { focusDrawer(); }
  });

  // --- Filters ----------------------------------------------------------------------------------
  // A select filters the board when its value is chosen: at once with the mouse or a phone's
  // picker, but with the arrow keys only on Enter or when focus leaves it, so walking through
  // the options sends no request and leaves no history entry per key.
  var NAV_KEYS = ["ArrowUp", "ArrowDown", "ArrowLeft", "ArrowRight", "Home", "End", "PageUp", "PageDown"];

  function filterForm() { return document.getElementById("filters"); }

  function applyFilters() {
    var form = filterForm();
    if (form && window.htmx) { window.htmx.trigger(form, "vibe:filter"); }
  }

  document.addEventListener("keydown", function (event) {
    var el = event.target;
    if (!el || el.tagName !== "SELECT" || !el.form || el.form.id !== "filters") { return; }
    if (NAV_KEYS.indexOf(event.key) !== -1) {
      el.vibeKeyed = true;
      window.setTimeout(function () { el.vibeKeyed = false; }, 0);
    } else if (event.key === "Enter" && el.vibePending) {
      event.preventDefault();
      el.vibePending = false;
      applyFilters();
    }
  });
  document.addEventListener("change", function (event) {
    var el = event.target;
    if (!el || !el.form || el.form.id !== "filters" || el.type === "search") { return; }
    if (el.vibeKeyed) { el.vibePending = true; return; }
    el.vibePending = false;
    applyFilters();
  });
  document.addEventListener("focusout", function (event) {
    var el = event.target;
    if (el && el.vibePending) { el.vibePending = false; applyFilters(); }
  });

  // The form shows what the URL says: after Back or Forward, htmx restores a snapshot of the
  // page whose fields hold the values they were rendered with, not the ones chosen since.
  function syncFilters() {
    var form = filterForm();
    if (!form) { return; }
    var params = new URLSearchParams(window.location.search);
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!el.name || el.type === "submit" || el.type === "button") { return; }
      if (el.type === "checkbox") {
        el.checked = params.get(el.name) === el.value;
      } else {
        el.value = params.get(el.name) || "";
      }
    });
  }

  // On a phone the filters fold away behind one button, so the work needing a person comes
  // first; on a wider screen (or without JavaScript) they are simply there.
  var phone = window.matchMedia ? window.matchMedia("(max-width: 640px)") : null;
  function foldFilters() {
    var form = filterForm();
    var button = form && form.querySelector(".filters-toggle");
    if (!button) { return; }
    var fold = Boolean(phone && phone.matches);
    button.hidden = !fold;
    // Folded to begin with; once the person opened or closed them, their choice stands.
    var open = !fold || (button.dataset.chosen === "1" && button.getAttribute("aria-expanded") === "true");
    button.setAttribute("aria-expanded", open ? "true" : "false");
    form.classList.toggle("filters-folded", !open);
  }
  document.addEventListener("click", function (event) {
    var button = event.target.closest && event.target.closest(".filters-toggle");
    if (!button) { return; }
    var open = button.getAttribute("aria-expanded") === "true";
    button.dataset.chosen = "1";
    button.setAttribute("aria-expanded", open ? "false" : "true");
    button.form.classList.toggle("filters-folded", open);
  });
  if (phone && phone.addEventListener) { phone.addEventListener("change", foldFilters); }

  // --- Confirmation dialogs -----------------------------------------------------------------
  // In place of the browser's confirm(), whose "Cancel" button would mean "keep the task": the
  // buttons say what they do (data-confirm-yes / data-confirm-no), and the safe one has focus.
  document.addEventListener("htmx:confirm", function (event) {
    var question = event.detail.question;
    var dialog = document.getElementById("confirm-dialog");
    if (!question || !dialog || typeof dialog.showModal !== "function") { return; }
    event.preventDefault();
    var elt = event.detail.elt;
    var opener = document.activeElement;
    dialog.querySelector("#confirm-question").textContent = question;
    dialog.querySelector("#confirm-yes").textContent = elt.dataset.confirmYes || "Confirm";
    dialog.querySelector("#confirm-no").textContent = elt.dataset.confirmNo || "Go back";
    dialog.returnValue = "";
    dialog.addEventListener("close", function done() {
      dialog.removeEventListener("close", done);
      if (opener && document.body.contains(opener)) { opener.focus(); }
      if (dialog.returnValue === "yes") { event.detail.issueRequest(true); }
    });
    dialog.showModal();
    dialog.querySelector("#confirm-no").focus();
  });

  // --- Start, and again after htmx restores a page from its history ------------------------
  function init() {
    paintRefresh();
    paintTheme();
    foldFilters();
    markBorn(document.body);
  }
  document.addEventListener("DOMContentLoaded", function () {
    init();
    var box = pane();
    if (box && box.querySelector("#task-detail")) { focusDrawer(); }  // a shared ?task= link
  });
  document.addEventListener("htmx:load", function (event) { markBorn(event.detail.elt); });
  document.addEventListener("htmx:historyRestore", function () {
    init();
    syncFilters();
    refreshNow();  // the snapshot may be minutes old
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
  // A filter change counts too: a poll sent before it carries the unfiltered board.
  function countAction(event) {
    var config = event.detail.requestConfig;
    if (!config || isPoll(config.elt)) { return; }
    var filter = Boolean(config.elt && config.elt.id === "filters");
    if (filter || (config.verb && config.verb !== "get")) { actions += 1; }
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

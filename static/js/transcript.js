// Live run transcripts on the task page and the board's task panel.
//
// Each running transcript (<ol data-transcript data-running="1">) asks its events endpoint for
// what came after the last sequence number it has, every 1.5 s, and appends the rows. Nothing
// already shown is re-rendered, so an opened tool call stays open and a selection stays put.
// It follows the newest row unless the person scrolled up, pauses while the tab is hidden or
// auto-refresh is paused, and stops when the run ends. Loaded by the panel itself (the board
// swaps the panel in with htmx), so a second load only looks for new transcripts.
(function () {
  "use strict";
  if (window.vibeTranscript) { window.vibeTranscript.scan(document); return; }

  var POLL_MS = 1500;
  var NEAR_BOTTOM_PX = 40;

  function shouldPoll() {
    return window.vibeShouldPoll ? window.vibeShouldPoll() : document.visibilityState === "visible";
  }

  function scroller(list) {
    return list.closest(".transcript-box") || list;
  }

  function atBottom(box) {
    return box.scrollHeight - box.scrollTop - box.clientHeight < NEAR_BOTTOM_PX;
  }

  // A tool result that arrived after its call (a later poll, or "show earlier") moves into it.
  function pairResults(list) {
    list.querySelectorAll("li[data-result-for]").forEach(function (row) {
      var id = row.getAttribute("data-result-for");
      if (!id) { return; }
      var call = null;
      list.querySelectorAll("details[data-tool-id]").forEach(function (candidate) {
        if (!call && candidate.getAttribute("data-tool-id") === id && !candidate.querySelector(".tx-result-body")) {
          call = candidate;
        }
      });
      var body = row.querySelector(".tx-result-body");
      if (!call || !body) { return; }
      var pending = call.querySelector(".tx-pending");
      if (pending) { pending.remove(); }
      if (body.classList.contains("tx-result-error")) { call.classList.add("tx-call-error"); }
      call.appendChild(body);
      row.remove();
    });
  }

  function applyFinished(list, fragment) {
    var run = list.closest("details.run");
    ["run-state", "run-usage"].forEach(function (name) {
      var source = fragment.querySelector("template[data-" + name + "]");
      var target = run && run.querySelector("[data-" + name + "]");
      if (source && target) { target.replaceChildren(source.content.cloneNode(true)); }
      if (source) { source.remove(); }
    });
  }

  function append(list, html) {
    var holder = document.createElement("template");
    holder.innerHTML = html;
    var fragment = holder.content;
    applyFinished(list, fragment);
    if (!fragment.querySelector("li")) { return; }
    var box = scroller(list);
    var follow = atBottom(box);
    var empty = list.querySelector(".tx-empty");
    if (empty) { empty.remove(); }
    list.appendChild(fragment);
    pairResults(list);
    if (follow) { box.scrollTop = box.scrollHeight; }
  }

  function schedule(list, delay) {
    if (list.vibeTimer || list.dataset.running !== "1") { return; }
    list.vibeTimer = window.setTimeout(function () {
      list.vibeTimer = null;
      poll(list);
    }, delay);
  }

  function poll(list) {
    if (!document.body.contains(list) || list.dataset.running !== "1" || list.vibeBusy) { return; }
    // Hidden or paused: stop here; coming back (vibe:refresh, visibilitychange) starts again.
    if (!shouldPoll()) { return; }
    list.vibeBusy = true;
    var url = list.dataset.eventsUrl + "?after=" + encodeURIComponent(list.dataset.lastSeq || "0");
    var more = false;
    window.fetch(url, { credentials: "same-origin", headers: { "HX-Request": "true" } })
      .then(function (response) {
        if (!response.ok) { throw new Error("HTTP " + response.status); }
        var last = response.headers.get("X-Transcript-Last-Seq");
        if (last !== null) { list.dataset.lastSeq = last; }
        if (response.headers.get("X-Transcript-Running") === "0") { list.dataset.running = "0"; }
        more = response.headers.get("X-Transcript-More") === "1";
        return response.text();
      })
      .then(function (html) {
        if (html) { append(list, html); }
        list.vibeBusy = false;
        schedule(list, more ? 0 : POLL_MS);
      })
      .catch(function () {
        // The server or the network is away: try again later, more slowly.
        list.vibeBusy = false;
        schedule(list, POLL_MS * 4);
      });
  }

  function start(list) {
    if (list.vibeStarted) { return; }
    list.vibeStarted = true;
    var box = scroller(list);
    box.scrollTop = box.scrollHeight;
    pairResults(list);
    list.addEventListener("vibe:refresh", function () { poll(list); });
    schedule(list, POLL_MS);
  }

  function scan(root) {
    var scope = root && root.querySelectorAll ? root : document;
    scope.querySelectorAll("ol[data-transcript]").forEach(start);
  }

  function wake() {
    document.querySelectorAll("ol[data-transcript]").forEach(function (list) {
      if (list.dataset.running === "1" && !list.vibeTimer) { poll(list); }
    });
  }

  // The panel's facts refresh by themselves; when they list a run this page does not have
  // (a retry started one), the whole panel is fetched once, transcripts included.
  function checkRuns(summary) {
    var panel = summary.closest("#task-detail");
    var runs = panel && panel.querySelector(".runs[data-run-ids]");
    if (!runs || !window.htmx) { return; }
    if (runs.getAttribute("data-run-ids") !== summary.getAttribute("data-run-ids")) {
      window.htmx.ajax("GET", panel.getAttribute("data-task-url"), { target: "#task-detail", swap: "outerHTML" });
    }
  }

  document.addEventListener("htmx:afterSettle", function (event) {
    var target = event.detail && event.detail.elt;
    if (target && target.id === "task-summary") { checkRuns(target); }
    document.querySelectorAll("ol[data-transcript]").forEach(function (list) {
      if (list.vibeStarted) { pairResults(list); } else { start(list); }
    });
  });
  document.addEventListener("visibilitychange", function () {
    if (shouldPoll()) { wake(); }
  });
  // The refresh interval: turning it back on asks every running transcript to catch up.
  document.addEventListener("vibe:refresh-setting", function () {
    window.setTimeout(wake, 0);
  });

  window.vibeTranscript = { scan: scan, poll: poll };
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { scan(document); });
  } else {
    scan(document);
  }
})();

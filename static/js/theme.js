// The colour theme, set before the page paints: the one the person chose (vibe.js remembers
// it), else the system's (prefers-color-scheme). Without JavaScript the page stays light.
(function () {
  "use strict";
  var chosen = null;
  try { chosen = window.localStorage.getItem("vibe:theme"); } catch (e) { /* private mode */ }
  var dark = window.matchMedia && window.matchMedia("(prefers-color-scheme: dark)").matches;
  if (chosen !== "dark" && chosen !== "light") { chosen = dark ? "dark" : "light"; }
  document.documentElement.setAttribute("data-theme", chosen);
})();

// Draws each card's chart (Chart.js, vendored) from the numbers of its table; runs again after
// every HTMX swap of the cards. Without JavaScript the tables alone show the figures.
(function () {
  function draw(root) {
    if (!window.Chart) return;
    root.querySelectorAll("canvas[data-chart]").forEach(function (canvas) {
      if (canvas.dataset.drawn) return;
      canvas.dataset.drawn = "1";
      var unit = canvas.dataset.unit;
      var scale = unit === "seconds" ? 1 / 3600 : unit === "ratio" ? 100 : 1;
      var values = JSON.parse(canvas.dataset.values).map(function (v) { return v === null ? null : v * scale; });
      var links = Array.prototype.map.call(canvas.closest(".dash-card").querySelectorAll(".dash-table td.num a"), function (a) { return a.href; });
      new window.Chart(canvas, {
        type: canvas.dataset.chart,
        data: { labels: JSON.parse(canvas.dataset.labels), datasets: [{ data: values, borderColor: "#2563eb", backgroundColor: "rgba(37,99,235,.35)", fill: true, tension: .2 }] },
        options: { maintainAspectRatio: false, animation: false, plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true } },
          onClick: function (event, elements) { if (elements.length && links[elements[0].index]) window.location = links[elements[0].index]; } }
      });
    });
  }
  document.addEventListener("DOMContentLoaded", function () { draw(document); });
  document.addEventListener("htmx:afterSwap", function (event) { draw(event.target.parentNode || document); });
})();

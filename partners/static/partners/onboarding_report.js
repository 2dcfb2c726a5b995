// The onboarding report's chart: stored and not stored records per day, stacked; a click on
// a day shows that day's rows of the table. Reads the days from #report-days (json_script).
(function () {
  const source = document.getElementById("report-days");
  if (!source || !window.Chart) { return; }
  const days = JSON.parse(source.textContent);
  const title = document.getElementById("report-table-title");
  const showAll = document.getElementById("report-show-all");
  const rows = document.querySelectorAll("#report-table tbody tr[data-day]");
  function showDay(day) {
    rows.forEach(function (row) { row.hidden = day !== null && row.dataset.day !== day; });
    title.textContent = day === null ? "Every day" : "Day " + day;
    showAll.hidden = day === null;
  }
  showAll.addEventListener("click", function (event) { event.preventDefault(); showDay(null); });
  window.reportChart = new Chart(document.getElementById("report-chart"), {
    type: "bar",
    data: {
      labels: days.map(function (d) { return d.day; }),
      datasets: [
        {label: "Stored", data: days.map(function (d) { return d.stored; }), backgroundColor: "#2e7d32"},
        {label: "Not stored", data: days.map(function (d) { return d.failed; }), backgroundColor: "#c62828"}
      ]
    },
    options: {
      maintainAspectRatio: false,
      animation: false,
      scales: {x: {stacked: true}, y: {stacked: true, beginAtZero: true, ticks: {precision: 0}}},
      onClick: function (event, elements, chart) {
        const hit = chart.getElementsAtEventForMode(event, "index", {intersect: false}, false);
        if (hit.length) { showDay(days[hit[0].index].day); }
      }
    }
  });
})();

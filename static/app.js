// Refreshes the task table every few seconds, so a task queued from the form is seen reaching `done`.
(function () {
  "use strict";
  var table = document.getElementById("tasks");
  if (!table || !window.fetch) { return; }
  function cell(text) { var td = document.createElement("td"); td.textContent = text; return td; }
  function refresh() {
    fetch("/api/tasks?limit=10", { headers: { "Accept": "application/json" } })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (body) {
        if (!body) { return; }
        var rows = document.createDocumentFragment();
        body.tasks.forEach(function (t) {
          var tr = document.createElement("tr");
          tr.appendChild(cell(t.id.slice(0, 8)));
          tr.appendChild(cell(t.kind));
          var state = cell(t.state);
          state.className = t.state === "done" ? "ok" : (t.state === "dead" ? "bad" : "");
          tr.appendChild(state);
          tr.appendChild(cell(String(t.attempts)));
          tr.appendChild(cell(t.created_at));
          rows.appendChild(tr);
        });
        var body_ = table.tBodies[0];
        while (body_.firstChild) { body_.removeChild(body_.firstChild); }
        body_.appendChild(rows);
      })
      .catch(function () { /* the next tick tries again */ });
  }
  setInterval(refresh, 3000);
}());

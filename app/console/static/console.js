// The console's live parts; every page reads whole without them.
// A job page follows the job's own event stream (GET /v1/jobs/<id>/events, the cookie's key);
// batch rows poll GET /v1/batches/<id> until the batch ends.
(function () {
  "use strict";

  var JOB_FINAL = ["succeeded", "failed", "cancelled"];
  var BATCH_FINAL = ["completed", "failed", "cancelled", "expired"];
  var BATCH_POLL_MS = 1000;

  function setStatus(element, status) {
    element.textContent = status;
    element.className = "status " + status.split(" ")[0];
  }

  function followJob(main) {
    if (JOB_FINAL.indexOf(main.dataset.jobStatus) >= 0 || !window.EventSource) {
      return;
    }
    var content = document.getElementById("job-content");
    var reasoning = document.getElementById("job-reasoning");
    var status = document.getElementById("job-status");
    var source = new EventSource("/v1/jobs/" + encodeURIComponent(main.dataset.jobId) + "/events");
    content.textContent = "";  // the stream replays every delta from the first
    reasoning.textContent = "";
    source.addEventListener("started", function () { setStatus(status, "running"); });
    source.addEventListener("delta", function (event) {
      var delta = JSON.parse(event.data);
      content.textContent += delta.content || "";
      reasoning.textContent += delta.reasoning || "";
    });
    ["done", "error", "cancelled"].forEach(function (type) {
      source.addEventListener(type, function (event) {
        if (event.data === undefined) {
          return;  // the connection dropped (EventSource's own "error"); it reconnects and resumes
        }
        source.close();
        setStatus(status, JSON.parse(event.data).status);
        window.location.reload();  // the finished page: stored answer, timings, quality signals
      });
    });
  }

  function showBatch(element, batch) {
    var counts = batch.request_counts;
    var done = counts.completed + counts.failed;
    var progress = element.querySelector("[data-field=progress]");
    progress.max = counts.total || 1;
    progress.value = done;
    progress.textContent = done + " of " + counts.total;
    element.querySelector("[data-field=counts]").textContent =
      (counts.total ? Math.floor(100 * done / counts.total) : 0) + " % · " + counts.completed +
      " done, " + counts.failed + " failed, of " + counts.total;
    setStatus(element.querySelector("[data-field=status]"), batch.status);
  }

  function followBatch(element) {
    if (BATCH_FINAL.indexOf(element.dataset.batchStatus) >= 0) {
      return;
    }
    var url = "/v1/batches/" + encodeURIComponent(element.dataset.batchId);
    function poll() {
      fetch(url, { credentials: "same-origin" }).then(function (response) {
        return response.ok ? response.json() : null;
      }).then(function (batch) {
        if (batch) {
          showBatch(element, batch);
          if (BATCH_FINAL.indexOf(batch.status) >= 0) {
            if (element.hasAttribute("data-reload-when-final")) {
              window.location.reload();  // its output and error files are linked now
            }
            return;
          }
        }
        window.setTimeout(poll, BATCH_POLL_MS);
      }).catch(function () { window.setTimeout(poll, BATCH_POLL_MS); });
    }
    window.setTimeout(poll, BATCH_POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.documentElement.classList.add("js");
    var main = document.querySelector("main[data-job-id]");
    if (main) {
      followJob(main);
    }
    document.querySelectorAll("[data-batch-id]").forEach(followBatch);
  });
})();

// perimeter dashboard: progressive enhancement only. Every page reads the
// same without this file; it shows times in the reader's own time zone.
"use strict";
document.addEventListener("DOMContentLoaded", function () {
  var format = new Intl.DateTimeFormat(undefined, {
    year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", timeZoneName: "short"
  });
  document.querySelectorAll("time[datetime]").forEach(function (element) {
    var at = new Date(element.getAttribute("datetime"));
    if (!isNaN(at.getTime())) {
      element.title = element.textContent;
      element.textContent = format.format(at);
    }
  });
});

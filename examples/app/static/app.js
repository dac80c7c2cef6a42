// The guestbook's script: served by StaticFiles, precompressed by `scalekit zip-static`.
// It counts what is left to type (the flash message fades away in style.css).
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  var body = document.querySelector("textarea[name=body]");
  if (body) {
    var left = document.createElement("small");
    var update = function () {
      left.textContent = (body.maxLength - body.value.length) + " characters left";
    };
    body.addEventListener("input", update);
    body.parentNode.insertBefore(left, body.nextSibling);
    update();
  }
});

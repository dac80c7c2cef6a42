// The guestbook's script: served by StaticFiles, precompressed by `scalekit zip-static`.
// It fades the flash message out after a few seconds and counts what is left to type.
"use strict";

document.addEventListener("DOMContentLoaded", function () {
  var flash = document.getElementById("flash");
  if (flash) {
    setTimeout(function () {
      flash.style.transition = "opacity 1s";
      flash.style.opacity = "0";
    }, 4000);
  }
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

// HomeWarden camera editor: draw privacy masks and named zones on the latest snapshot.
// Polygons are in normalised 0..1 frame coordinates (x right, y down), as the config file's.
// The form's textareas (masks: [[[x, y], ...], ...]; zones: {name: [[x, y], ...]}) are the
// state: read at start, rewritten after every change, posted with the form. No inline
// script (CSP); no library.
"use strict";

(function () {
  var NAME = /^[A-Za-z0-9_-]{1,64}$/;

  function round(v) {
    return Math.round(Math.min(1, Math.max(0, v)) * 10000) / 10000;
  }

  function parse(text, fallback) {
    try {
      var v = JSON.parse(text);
      return v === null || typeof v !== "object" ? fallback : v;
    } catch (e) {
      return fallback;
    }
  }

  function attach(root) {
    var stage = root.querySelector("#area-stage");
    var img = root.querySelector("#area-snapshot");
    var canvas = root.querySelector("#area-canvas");
    var kind = root.querySelector("#area-kind");
    var zoneName = root.querySelector("#area-zone-name");
    var list = root.querySelector("#area-list");
    var message = root.querySelector("#area-message");
    var masksField = document.getElementById("area-masks");
    var zonesField = document.getElementById("area-zones");
    if (!canvas || !masksField || !zonesField) { return; }
    var ctx = canvas.getContext("2d");
    var masks = parse(masksField.value, []);
    var zones = parse(zonesField.value, {});
    if (!Array.isArray(masks)) { masks = []; }
    if (Array.isArray(zones)) { zones = {}; }
    var current = []; // corners of the polygon being drawn

    function say(text) { message.textContent = text || ""; }

    function save() {
      masksField.value = JSON.stringify(masks);
      zonesField.value = JSON.stringify(zones);
    }

    function path(points) {
      ctx.beginPath();
      points.forEach(function (p, i) {
        var x = p[0] * canvas.width, y = p[1] * canvas.height;
        if (i === 0) { ctx.moveTo(x, y); } else { ctx.lineTo(x, y); }
      });
    }

    function polygon(points, fill, stroke, label) {
      if (!Array.isArray(points) || points.length === 0) { return; }
      path(points);
      ctx.closePath();
      ctx.fillStyle = fill;
      ctx.fill();
      ctx.lineWidth = Math.max(2, canvas.width / 320);
      ctx.strokeStyle = stroke;
      ctx.stroke();
      if (label) {
        ctx.font = Math.round(canvas.height / 18) + "px sans-serif";
        ctx.fillStyle = "#fff";
        ctx.fillText(label, points[0][0] * canvas.width + 4, points[0][1] * canvas.height + 16);
      }
    }

    function draw() {
      ctx.clearRect(0, 0, canvas.width, canvas.height);
      masks.forEach(function (m) { polygon(m, "rgba(0,0,0,0.55)", "rgba(220,40,40,0.9)"); });
      Object.keys(zones).forEach(function (name) {
        polygon(zones[name], "rgba(40,120,230,0.25)", "rgba(40,120,230,0.95)", name);
      });
      if (current.length) {
        path(current);
        ctx.lineWidth = Math.max(2, canvas.width / 320);
        ctx.strokeStyle = "#ffd400";
        ctx.stroke();
        current.forEach(function (p) {
          ctx.fillStyle = "#ffd400";
          ctx.fillRect(p[0] * canvas.width - 3, p[1] * canvas.height - 3, 6, 6);
        });
      }
    }

    function item(label, cls, remove) {
      var li = document.createElement("li");
      var swatch = document.createElement("span");
      swatch.className = "swatch " + cls;
      var text = document.createElement("span");
      text.textContent = label;
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = "Remove";
      button.addEventListener("click", function () { remove(); changed(); });
      li.appendChild(swatch);
      li.appendChild(text);
      li.appendChild(button);
      list.appendChild(li);
    }

    function changed() {
      save();
      list.textContent = "";
      masks.forEach(function (m, i) {
        item("Mask " + (i + 1) + " (" + m.length + " corners)", "mask", function () {
          masks.splice(i, 1);
        });
      });
      Object.keys(zones).forEach(function (name) {
        item("Zone " + name + " (" + zones[name].length + " corners)", "zone", function () {
          delete zones[name];
        });
      });
      draw();
    }

    function size() {
      var w = img.naturalWidth, h = img.naturalHeight;
      if (!w || !h) { w = 640; h = 360; stage.classList.add("no-picture"); }
      else { stage.classList.remove("no-picture"); }
      canvas.width = w;
      canvas.height = h;
      draw();
    }

    canvas.addEventListener("click", function (ev) {
      var r = canvas.getBoundingClientRect();
      if (!r.width || !r.height) { return; }
      current.push([round((ev.clientX - r.left) / r.width), round((ev.clientY - r.top) / r.height)]);
      say(current.length < 3 ? "Place at least " + (3 - current.length) + " more corner(s)." : "");
      draw();
    });

    root.querySelector("#area-undo").addEventListener("click", function () {
      current.pop();
      draw();
    });

    root.querySelector("#area-finish").addEventListener("click", function () {
      if (current.length < 3) { say("A polygon needs at least 3 corners."); return; }
      if (kind.value === "zone") {
        var name = zoneName.value.trim();
        if (!NAME.test(name)) { say("Name the zone: letters, digits, - and _."); return; }
        zones[name] = current;
      } else {
        masks.push(current);
      }
      current = [];
      say("Not saved yet: press Save masks and zones.");
      changed();
    });

    // Hand edits of the JSON redraw the picture.
    [masksField, zonesField].forEach(function (field) {
      field.addEventListener("change", function () {
        var m = parse(masksField.value, null), z = parse(zonesField.value, null);
        if (Array.isArray(m) && z && !Array.isArray(z)) { masks = m; zones = z; changed(); }
        else { say("That is not valid JSON."); }
      });
    });

    img.addEventListener("load", size);
    img.addEventListener("error", size);
    if (img.complete) { size(); }
    changed();
  }

  document.addEventListener("DOMContentLoaded", function () {
    document.querySelectorAll("[data-testid=area-editor]").forEach(function (root) {
      attach(root.parentNode);
    });
  });
})();

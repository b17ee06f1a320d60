// The only page script: picking a lookup match and uploading a file. Both leave plain hidden
// inputs in the form and fire "change", so the server re-evaluates the form's conditions.
function kilnChip(widget, value, label) {
  var chips = widget.querySelector(".chips");
  if (!widget.dataset.multiple) { chips.innerHTML = ""; }
  var chip = document.createElement("span"); chip.className = "chip";
  var input = document.createElement("input"); input.type = "hidden"; input.name = widget.dataset.name; input.value = value;
  var remove = document.createElement("button"); remove.type = "button"; remove.textContent = "×";
  remove.setAttribute("aria-label", "×"); remove.addEventListener("click", function () { kilnUnpick(remove); });
  chip.appendChild(input); chip.appendChild(document.createTextNode(label + " ")); chip.appendChild(remove);
  chips.appendChild(chip);
  input.dispatchEvent(new Event("change", {bubbles: true}));
}
function kilnPick(button) {
  var widget = button.closest(".lookup");
  kilnChip(widget, button.dataset.value, button.dataset.label);
  var results = widget.querySelector(".lookup-results"); if (results) { results.innerHTML = ""; }
  var search = widget.querySelector("input[type=search]"); if (search) { search.value = ""; }
}
function kilnUnpick(button) {
  var widget = button.closest(".lookup");
  button.parentNode.remove();
  widget.dispatchEvent(new Event("change", {bubbles: true}));
}
// A file is there now: the server's "required" message beside the field no longer applies.
function kilnSettled(widget) {
  var field = document.getElementById("field-" + widget.dataset.name), message = document.getElementById("err-" + widget.dataset.name);
  if (field) { field.classList.remove("invalid"); }
  if (message) { message.hidden = true; }
}

function kilnUpload(input) {
  var widget = input.closest(".upload"), bar = widget.querySelector("progress"), note = widget.querySelector(".message");
  var limit = parseInt(widget.dataset.maxSize || "0", 10), files = Array.prototype.slice.call(input.files);
  note.hidden = true;
  var big = files.filter(function (f) { return limit && f.size > limit; });
  if (big.length) { note.textContent = widget.dataset.tooBig + " (" + big[0].name + ")"; note.hidden = false; input.value = ""; return; }
  var token = document.querySelector("input[name=csrf_token]");
  function next() {
    var file = files.shift();
    if (!file) { bar.hidden = true; input.value = ""; return; }
    var data = new FormData(); data.append("file", file);
    var xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/v1/files?field=" + encodeURIComponent(widget.dataset.field));
    if (token) { xhr.setRequestHeader("X-CSRF-Token", token.value); }
    xhr.upload.onprogress = function (e) { if (e.lengthComputable) { bar.value = Math.round(100 * e.loaded / e.total); } };
    xhr.onload = function () {
      var body = {}; try { body = JSON.parse(xhr.responseText); } catch (e) {}
      if (xhr.status >= 200 && xhr.status < 300 && body.id) { kilnChip(widget, body.id, body.filename || file.name); kilnSettled(widget); next(); }
      else { note.textContent = (body.error && body.error.message) || widget.dataset.failed; note.hidden = false; bar.hidden = true; }
    };
    xhr.onerror = function () { note.textContent = widget.dataset.failed; note.hidden = false; bar.hidden = true; };
    bar.value = 0; bar.hidden = false; xhr.send(data);
  }
  next();
}

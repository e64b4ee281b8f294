"use strict";
// Draw a digit in black ink on white, like on paper; the canvas goes to POST /predict as a PNG,
// so it is preprocessed exactly as `mnist-lab predict` does with a photo. At most one request
// is in flight: changes made meanwhile are sent when it returns, so the answer follows the pen.

const pad = document.getElementById("pad");
const ink = pad.getContext("2d");
const seen = document.getElementById("seen").getContext("2d");
const heat = document.getElementById("saliency").getContext("2d");
const why = document.getElementById("why");
const whyCaption = document.getElementById("why-caption");
const digit = document.getElementById("digit");
const picker = document.getElementById("model");
const statusLine = document.getElementById("status");
const rows = [];
let version = 0; // counts changes to the drawing; #digit's data-version says which it shows
let clearedAt = 0; // answers about drawings from before the last Clear are dropped
let inked = false;
let last = null; // the pen's previous point while it is down
let busy = false;
let again = false;

const percent = (x) => `${(100 * x).toFixed(1)}%`;
const FOR = [200, 20, 20]; // red: ink that is evidence for the predicted digit
const AGAINST = [30, 90, 200]; // blue: ink that argues against it

function buildBars() {
  const list = document.getElementById("bars");
  for (let d = 0; d < 10; d += 1) {
    const row = document.createElement("li");
    const label = document.createElement("span");
    const track = document.createElement("span");
    const bar = document.createElement("span");
    const value = document.createElement("span");
    label.textContent = d;
    track.className = "track";
    bar.className = "bar";
    value.className = "value";
    track.append(bar);
    row.append(label, track, value);
    list.append(row);
    rows.push({ row, bar, value });
  }
}

function showResult(result, message) {
  digit.textContent = result ? result.digit : "–";
  rows.forEach(({ row, bar, value }, d) => {
    const p = result ? result.probabilities[d] : 0;
    bar.style.width = percent(p);
    value.textContent = result ? percent(p) : "";
    row.classList.toggle("top", result !== null && d === result.digit);
  });
  const image = seen.createImageData(28, 28);
  if (result) {
    result.input.flat().forEach((v, i) => image.data.set([v, v, v, 255], 4 * i));
  }
  seen.putImageData(image, 0, 0);
  showSaliency(result);
  statusLine.textContent = message;
}

// The API's saliency is integrated gradients of the predicted digit, scaled into [-1, 1]; it is
// drawn over the digit as faint grey ink on white. Its square root sets the colour's strength:
// linear, all but the few strongest pixels fade out, and the map reads as a handful of dots.
function showSaliency(result) {
  why.hidden = result === null;
  if (!result) return;
  const map = result.saliency;
  heat.canvas.hidden = map === null;
  if (map === null) {
    whyCaption.textContent = "No saliency: this model has no gradients (scikit-learn).";
    return;
  }
  whyCaption.textContent = `integrated gradients for class ${result.digit}: red for it, blue`
    + " against";
  const pixels = result.input.flat();
  const image = heat.createImageData(28, 28);
  map.flat().forEach((s, i) => {
    const paper = 255 - 0.3 * pixels[i];
    const [tint, a] = [s > 0 ? FOR : AGAINST, Math.sqrt(Math.abs(s))];
    const rgb = tint.map((c) => Math.round(paper + a * (c - paper)));
    image.data.set([...rgb, 255], 4 * i);
  });
  heat.putImageData(image, 0, 0);
}

function clearPad() {
  ink.fillStyle = "#fff";
  ink.fillRect(0, 0, pad.width, pad.height);
  inked = false;
  changed();
  clearedAt = version;
  showResult(null, "");
  digit.dataset.version = version;
}

function changed() {
  version += 1;
  pad.dataset.version = version;
}

async function send() {
  busy = true;
  const sent = version;
  const blob = await new Promise((resolve) => pad.toBlob(resolve, "image/png"));
  const form = new FormData();
  form.append("file", blob, "digit.png");
  const query = picker.value ? `?model=${encodeURIComponent(picker.value)}` : "";
  let result = null;
  let message;
  try {
    const response = await fetch(`/predict${query}`, { method: "POST", body: form });
    const body = await response.json();
    if (response.ok) [result, message] = [body, `model ${body.model}`];
    else message = body.detail;
  } catch (err) {
    message = `The server did not answer: ${err.message}`;
  }
  if (sent > clearedAt) {
    showResult(result, message);
    digit.dataset.version = sent;
  }
  busy = false;
  if (again) {
    again = false;
    predictSoon();
  }
}

function predictSoon() {
  if (!inked) return;
  if (busy) again = true;
  else send();
}

function point(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * (pad.width / box.width),
    (event.clientY - box.top) * (pad.height / box.height)];
}

function penDown(event) {
  pad.setPointerCapture(event.pointerId);
  last = point(event);
  ink.fillStyle = "#000";
  ink.beginPath();
  ink.arc(last[0], last[1], pad.width / 28, 0, 2 * Math.PI); // a tap leaves a dot
  ink.fill();
  inked = true;
  changed();
  predictSoon();
}

function penMove(event) {
  if (!last) return;
  const next = point(event);
  ink.lineWidth = pad.width / 14; // ~2 of MNIST's 28 pixels once the digit is scaled to 20
  ink.lineCap = "round";
  ink.lineJoin = "round";
  ink.strokeStyle = "#000";
  ink.beginPath();
  ink.moveTo(last[0], last[1]);
  ink.lineTo(next[0], next[1]);
  ink.stroke();
  last = next;
  changed();
  predictSoon();
}

async function loadModels() {
  try {
    const response = await fetch("/models");
    const body = await response.json();
    for (const m of body.models) {
      const accuracy = m.test_accuracy == null ? "" : `, ${percent(m.test_accuracy)}`;
      const text = `${m.id}: ${m.model} on ${m.dataset}${accuracy}${m.default ? " (default)" : ""}`;
      picker.add(new Option(text, m.default ? "" : m.id, m.default, m.default));
    }
    if (!body.models.some((m) => m.default)) { // a checkpoint file outside the store
      picker.add(new Option(`${body.default} (default)`, "", true, true), 0);
    }
  } catch (err) {
    statusLine.textContent = `Could not list the models: ${err.message}`;
  }
}

buildBars();
clearPad();
loadModels();
pad.addEventListener("pointerdown", penDown);
pad.addEventListener("pointermove", penMove);
pad.addEventListener("pointerup", () => { last = null; });
pad.addEventListener("pointercancel", () => { last = null; });
document.getElementById("clear").addEventListener("click", clearPad);
picker.addEventListener("change", predictSoon);

// ---- geometry -------------------------------------------------------------------------------------------

function fitScale() {
  if (!value || !size.w || !size.h) return 1;
  return Math.min(size.w / value.width, size.h / value.height);
}

function fitView() {
  if (!value) return;
  const s = fitScale();
  view.s = s;
  view.tx = (size.w - value.width * s) / 2;
  view.ty = (size.h - value.height * s) / 2;
  view.fit = true;
}

function zoomAt(px, py, factor) {
  const fs = fitScale();
  const s = Math.min(Math.max(view.s * factor, fs * 0.25), Math.max(fs * 200, 64));
  const f = s / view.s;
  view.tx = px - (px - view.tx) * f;
  view.ty = py - (py - view.ty) * f;
  view.s = s;
  view.fit = false;
}

function local(e) {  // CSS px relative to the canvas
  const r = canvas.getBoundingClientRect();
  return { x: e.clientX - r.left, y: e.clientY - r.top };
}
const toImage = (p) => ({ x: (p.x - view.tx) / view.s, y: (p.y - view.ty) / view.s });
const toScreen = (x, y) => ({ x: view.tx + x * view.s, y: view.ty + y * view.s });
const clamp = (v, lo, hi) => Math.min(Math.max(v, lo), hi);
const inImage = (q) => value && q.x >= 0 && q.y >= 0 && q.x <= value.width && q.y <= value.height;

function normBox(b) {
  return [Math.min(b[0], b[2]), Math.min(b[1], b[3]), Math.max(b[0], b[2]), Math.max(b[1], b[3])];
}

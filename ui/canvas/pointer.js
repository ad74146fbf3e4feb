// ---- pointer: hands each gesture to its tool (tools.js); touch pinch and the wheel zoom the view ----------

// two fingers pinch-zoom and pan (touch-action is none, so the browser does neither)
const touches = new Map();
let pinch = null;

function pinchState() {
  const [a, b] = Array.from(touches.values());
  return { d: Math.hypot(a.x - b.x, a.y - b.y) || 1, x: (a.x + b.x) / 2, y: (a.y + b.y) / 2 };
}

function cancelDrag() {
  if (drag && canvas.hasPointerCapture(drag.pointerId)) canvas.releasePointerCapture(drag.pointerId);
  drag = null;
}

canvas.addEventListener('pointerdown', (e) => {
  root.focus({ preventScroll: true });
  if (e.pointerType === 'touch') {
    touches.set(e.pointerId, local(e));
    if (touches.size === 2 && value) {
      cancelDrag();  // the first finger's gesture becomes the pinch (nothing is sent)
      pinch = Object.assign(pinchState(), { s: view.s, tx: view.tx, ty: view.ty });
      e.preventDefault();
      return;
    }
    if (touches.size > 2 || pinch) return;
  }
  if (!value || drag) return;
  const p = local(e);
  const t = panGesture(e) ? PAN_TOOL : TOOLS[tool];
  const d = t.down(e, p, toImage(p));
  if (d === false) return;  // not for this tool: the page keeps the event
  if (d) {
    drag = Object.assign(d, { tool: t, pointerId: e.pointerId });
    try { canvas.setPointerCapture(e.pointerId); } catch (err) { /* a pointer already gone: no capture */ }
  }
  e.preventDefault();
  setCursor(p);
  requestRender();
});

canvas.addEventListener('pointermove', (e) => {
  const p = local(e);
  if (e.pointerType === 'touch' && touches.has(e.pointerId)) {
    touches.set(e.pointerId, p);
    if (pinch && touches.size === 2) {
      const now = pinchState();
      const fs = fitScale();
      const s = Math.min(Math.max(pinch.s * now.d / pinch.d, fs * 0.25), Math.max(fs * 200, 64));
      view.tx = now.x - (pinch.x - pinch.tx) * (s / pinch.s);  // the image point under the first midpoint
      view.ty = now.y - (pinch.y - pinch.ty) * (s / pinch.s);  // follows the fingers' midpoint
      view.s = s;
      view.fit = false;
      requestRender();
      return;
    }
  }
  hover = p;
  if (drag && e.pointerId === drag.pointerId) drag.tool.move(drag, e, p, toImage(p));
  setCursor(p);
  requestRender();
});

function finish(e, cancelled) {
  if (!drag || e.pointerId !== drag.pointerId) return;
  const d = drag;
  drag = null;
  if (canvas.hasPointerCapture(e.pointerId)) canvas.releasePointerCapture(e.pointerId);
  if (!cancelled && value) d.tool.up(d, e);
  setCursor(local(e));
  requestRender();
}
function lift(e) {
  touches.delete(e.pointerId);
  if (pinch && touches.size < 2) pinch = null;
}
canvas.addEventListener('pointerup', (e) => { lift(e); finish(e, false); });
canvas.addEventListener('pointercancel', (e) => { lift(e); finish(e, true); });
canvas.addEventListener('pointerleave', () => { hover = null; requestRender(); });
canvas.addEventListener('contextmenu', (e) => e.preventDefault());
canvas.addEventListener('mousedown', (e) => { if (e.button === 1) e.preventDefault(); });  // no autoscroll

canvas.addEventListener('wheel', (e) => {
  e.preventDefault();
  if (!value) return;
  const unit = e.deltaMode === 1 ? 40 : e.deltaMode === 2 ? 800 : 1;
  const p = local(e);
  zoomAt(p.x, p.y, Math.pow(2, (-e.deltaY * unit) / ZOOM_STEP));
  requestRender();
}, { passive: false });

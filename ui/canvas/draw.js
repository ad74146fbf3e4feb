// ---- drawing: one frame draws the value with the edits in flight (the shapes are in shapes.js) -----------

function requestRender() {
  if (!frame) frame = requestAnimationFrame(render);
}

function resize() {
  const r = stage.getBoundingClientRect();
  const dpr = window.devicePixelRatio || 1;
  if (r.width === size.w && r.height === size.h && dpr === size.dpr) return false;
  size.w = r.width; size.h = r.height; size.dpr = dpr;
  canvas.width = Math.max(1, Math.round(r.width * dpr));
  canvas.height = Math.max(1, Math.round(r.height * dpr));
  if (view.fit) fitView();
  return true;
}

function render() {
  frame = 0;
  resize();
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  root.classList.toggle('gc-no-image', !value);
  if (!value) {
    root.dataset.revision = '';
    root.dataset.visibleBoxes = '0';
    return;
  }
  const objs = effectiveObjects();
  const { s, tx, ty } = view, dpr = size.dpr;
  ctx.setTransform(dpr * s, 0, 0, dpr * s, dpr * tx, dpr * ty);  // image px
  drawImageLayer(objs);
  drawTools('image');
  ctx.setTransform(dpr, 0, 0, dpr, 0, 0);  // CSS px
  const counts = drawBoxes(objs);
  for (const o of objs) if (selection.has(o.id)) drawClicks(o.clicks);
  for (const { payload: p } of pending) {
    if (p.kind === 'click' && (p.object_id == null || !objs.some((o) => o.id === p.object_id))) drawClicks([[p.x, p.y, p.positive]]);
  }
  for (const h of held) if (h.kind === 'click') drawClicks([[h.fields.x, h.fields.y, h.fields.positive]]);
  drawTools('screen');
  stampDrawn(counts);
}

function drawImageLayer(objs) {  // in image px: the image, the masks, the strokes in flight
  ctx.imageSmoothingEnabled = view.s < 2;  // pixels stay sharp when zoomed in for precise work
  if (img && imgImageId === value.image_id) ctx.drawImage(img, 0, 0, value.width, value.height);
  if (overlay && show.masks && opacity > 0) {
    colorOverlay(objs);
    ctx.imageSmoothingEnabled = false;
    ctx.globalAlpha = opacity;
    ctx.drawImage(overlay.canvas, 0, 0, value.width, value.height);
    ctx.globalAlpha = 1;
  }
  for (const { payload: p } of pending) if (p.kind === 'stroke') drawStroke(p.points, p.radius, p.erase, p);
}

function drawBoxes(objs) {  // in CSS px: the boxes (the selected ones on top) -> {visible, hidden} counts
  let visible = 0, hidden = 0;
  const selectedObjs = [];
  if (show.boxes) {
    for (const o of objs) {
      if (isHidden(o)) { hidden++; continue; }
      visible++;
      if (selection.has(o.id) && !o.temp) { selectedObjs.push(o); continue; }
      drawBox(o, false);
    }
    for (const o of selectedObjs) drawBox(o, true);
    const one = singleSelected(objs);
    if (one) drawHandles(one);
  } else {
    hidden = objs.filter(isHidden).length;
  }
  return { visible, hidden };
}

function stampDrawn({ visible, hidden }) {  // the root's data-* attributes for tests and the benchmark
  root.dataset.visibleBoxes = String(visible);
  root.dataset.hiddenBoxes = String(hidden);
  root.dataset.selected = selectedIds().join(',');
  root.dataset.negatives = Array.from(negatives).join(',');
  root.dataset.imageId = String(value.image_id);
  root.dataset.imageReady = img && imgImageId === value.image_id ? '1' : '0';
  const now = String(performance.now());
  if (drawnRevision !== value.revision) {  // when a server value was first drawn
    drawnRevision = value.revision;
    root.dataset.revision = String(value.revision);
    root.dataset.paintedAt = now;
  }
  const ov = overlay ? overlay.revision : null;
  if (drawnOverlay !== ov) {
    drawnOverlay = ov;
    root.dataset.overlayRevision = ov == null ? '' : String(ov);
    root.dataset.overlayPaintedAt = now;
  }
}

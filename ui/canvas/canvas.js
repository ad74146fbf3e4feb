// The labeling canvas (gr.HTML js_on_load): runs once per mount with element, trigger, props, watch.
// The server's value is the truth: every edit goes out as trigger('edit', payload) and the canvas is redrawn
// from the value that comes back. Local edits in flight are drawn on top of it until their reply arrives.
// The contract (value and payloads) is documented in ui/canvas/__init__.py.

const root = element.querySelector('.gc-root');
const stage = root.querySelector('.gc-stage');
const canvas = root.querySelector('.gc-canvas');
const ctx = canvas.getContext('2d');
const ui = {
  tools: Array.from(root.querySelectorAll('.gc-tool')),
  sign: root.querySelector('.gc-sign'),
  radius: root.querySelector('.gc-radius'),
  cls: root.querySelector('.gc-class'),
  opacity: root.querySelector('.gc-opacity'),
  shows: Array.from(root.querySelectorAll('.gc-show')),
  threshold: root.querySelector('.gc-threshold'),
  thresholdText: root.querySelector('.gc-threshold-value'),
  deleteHidden: root.querySelector('.gc-delete-hidden'),
  undo: root.querySelector('.gc-undo'),
  redo: root.querySelector('.gc-redo'),
  fit: root.querySelector('.gc-fit'),
  message: root.querySelector('.gc-message'),
  pending: root.querySelector('.gc-pending'),
};

const TOOL_KEYS = { v: 'box', b: 'box', k: 'click', u: 'brush', e: 'eraser' };
const PHRASE_COLOR = [150, 150, 150];
const HANDLE = 4;        // half size of a resize handle, CSS px
const DRAG_MIN = 3;      // a pointer that moved less than this (CSS px) clicked instead of dragging
const ZOOM_STEP = 200;   // wheel deltaY (px) per factor of 2 in zoom: one notch of 100 = x sqrt(2)
const MAX_RADIUS = 500;  // brush radius in image px; the server (ui/edits.py MAX_RADIUS) refuses more

let value = null;        // the last value from the server (object), null for no image
// this page's id among the windows that show the project: edits carry it with the revisions they were made on
// (payload.window, payload.seen), so that the server refuses an edit made on a view another window has changed
const windowId = 'w' + Array.from(crypto.getRandomValues(new Uint8Array(12)), (b) => b.toString(16).padStart(2, '0')).join('');
let seq = 0;             // client edit counter, sent as payload.seq
let lastSent = 0;        // the seq of the edit sent before (payload.prev): the server applies them in this order
let acked = 0;           // the last seq the server echoed
let pending = [];        // edits sent and not yet acknowledged: {payload, at}
let held = [];           // clicks/strokes waiting for the object a pending click/stroke creates
let selection = new Set();
let picked = 0;  // how many times the person changed the selection (a reply's "selected" must not undo a newer pick)
let tool = 'box';
let positive = true;
let currentClass = null;
let classesKey = '';
const view = { s: 1, tx: 0, ty: 0, fit: true };
const size = { w: 0, h: 0, dpr: 1 };
let img = null, imgUrl = null, imgImageId = null;
let overlay = null, overlayUrl = null, overlayLoading = false;
let drag = null;         // the pointer gesture in progress
let hover = null;        // last pointer position over the canvas (CSS px)
let spaceHeld = false;
let note = null;         // a local message (e.g. an image that did not load)
let drawnRevision = null, drawnOverlay = null;
let frame = 0;
const show = { boxes: true, masks: true, labels: true, scores: true };
let opacity = Number(ui.opacity.value);
let threshold = Number(ui.threshold.value);
let radius = Number(ui.radius.value);

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

// ---- objects: the server's, with the edits in flight applied -------------------------------------------

function classColor(name) {
  const c = value && (value.classes || []).find((k) => k.name === name);
  return c ? c.color : [255, 64, 64];
}
const colorOf = (o) => (o.phrase ? PHRASE_COLOR : o.color || [255, 64, 64]);
const rgba = (c, a) => `rgba(${c[0]},${c[1]},${c[2]},${a})`;
const isHidden = (o) => o.source === 'model' && o.score != null && o.score < threshold;

function effectiveObjects() {
  if (!value) return [];
  let objs = (value.objects || []).map((o) => Object.assign({}, o, { box: o.box.slice(), clicks: (o.clicks || []).slice() }));
  for (const { payload: p } of pending) {
    const find = (id) => objs.find((o) => o.id === id);
    if (p.kind === 'add') {
      objs.push({ id: null, temp: true, class_name: p.class_name, phrase: false, box: p.box.slice(), score: null,
        source: 'manual', color: classColor(p.class_name), has_mask: false, clicks: [] });
    } else if (p.kind === 'move') {
      const o = find(p.object_id);
      if (o) o.box = [o.box[0] + p.dx, o.box[1] + p.dy, o.box[2] + p.dx, o.box[3] + p.dy];
    } else if (p.kind === 'resize') {
      const o = find(p.object_id);
      if (o) o.box = p.box.slice();
    } else if (p.kind === 'delete') {
      objs = objs.filter((o) => o.id === null || !p.object_ids.includes(o.id));
    } else if (p.kind === 'relabel') {
      for (const o of objs) {
        if (p.object_ids.includes(o.id)) Object.assign(o, { class_name: p.class_name, phrase: false, color: classColor(p.class_name) });
      }
    } else if (p.kind === 'click') {
      const o = p.object_id != null && find(p.object_id);
      if (o) o.clicks.push([p.x, p.y, p.positive]);
    }
  }
  if (drag && (drag.type === 'move' || drag.type === 'resize') && drag.moved) {  // the box being dragged
    const o = objs.find((x) => x.id === drag.id);
    const b = drag.orig;
    if (o) o.box = drag.type === 'move' ? [b[0] + drag.dx, b[1] + drag.dy, b[2] + drag.dx, b[3] + drag.dy] : normBox(drag.box);
  }
  return objs;
}

function boxesAt(p, objs) {  // the visible boxes under p (CSS px), smallest first (nested boxes stay reachable)
  if (!show.boxes) return [];
  const hits = [];
  for (const o of objs) {
    if (o.temp || isHidden(o)) continue;
    const a = toScreen(o.box[0], o.box[1]), b = toScreen(o.box[2], o.box[3]);
    if (p.x >= a.x - 2 && p.x <= b.x + 2 && p.y >= a.y - 2 && p.y <= b.y + 2) hits.push({ o, area: (b.x - a.x) * (b.y - a.y) });
  }
  return hits.sort((u, v) => u.area - v.area).map((h) => h.o);  // a stable sort: equal boxes in the value's order
}

function hitTest(p, objs) {  // a selected box under p wins (it can be dragged off others), else the smallest
  const hits = boxesAt(p, objs);
  return hits.find((o) => selection.has(o.id)) || hits[0] || null;
}

// a click (no drag) where the last one was, on the box it selected, selects the next box under the pointer:
// repeated clicks cycle through overlapping boxes, smallest to largest and round again
let lastClick = null;  // {x, y} in image px and the id it left selected

function cycle(d) {
  const p = toScreen(d.start.x, d.start.y);
  const last = lastClick && toScreen(lastClick.x, lastClick.y);
  if (d.wasSelected && last && lastClick.id === d.id && Math.hypot(p.x - last.x, p.y - last.y) < DRAG_MIN) {
    const hits = boxesAt(p, effectiveObjects());
    const i = hits.findIndex((o) => o.id === d.id);
    if (hits.length > 1 && i >= 0) { selection = new Set([hits[(i + 1) % hits.length].id]); picked++; }
  }
  lastClick = { x: d.start.x, y: d.start.y, id: selection.size === 1 ? selection.values().next().value : null };
}

function handlesOf(box) {  // [name, x, y] in CSS px; the name says which edges the handle moves
  const a = toScreen(box[0], box[1]), b = toScreen(box[2], box[3]);
  const mx = (a.x + b.x) / 2, my = (a.y + b.y) / 2;
  return [['nw', a.x, a.y], ['n', mx, a.y], ['ne', b.x, a.y], ['e', b.x, my],
    ['se', b.x, b.y], ['s', mx, b.y], ['sw', a.x, b.y], ['w', a.x, my]];
}

function singleSelected(objs) {
  if (selection.size !== 1) return null;
  const id = selection.values().next().value;
  return objs.find((o) => o.id === id && !isHidden(o)) || null;
}

function handleAt(p, objs) {
  const o = singleSelected(objs);
  if (!o || !show.boxes) return null;
  for (const [name, x, y] of handlesOf(o.box)) {
    if (Math.abs(p.x - x) <= HANDLE + 3 && Math.abs(p.y - y) <= HANDLE + 3) return { object: o, name };
  }
  return null;
}

// ---- sending edits --------------------------------------------------------------------------------------

function seenFor(kind, fields) {  // [[id, rev]] of the objects the edit touches as this page last drew them
  const objects = value.objects || [];
  if (kind === 'undo' || kind === 'redo') return objects.map((o) => [o.id, o.rev]);  // what it may take back
  const ids = new Set(fields.object_ids || (fields.object_id != null ? [fields.object_id] : []));
  return objects.filter((o) => ids.has(o.id)).map((o) => [o.id, o.rev]);
}

function send(kind, fields) {
  if (!value) return;
  fields = fields || {};
  const payload = Object.assign({ kind, image_id: value.image_id, seq: ++seq, prev: lastSent, window: windowId,
    base: value.revision, seen: seenFor(kind, fields) }, fields);
  lastSent = payload.seq;
  pending.push({ payload, at: performance.now(), picked });
  trigger('edit', payload);
  root.dataset.sentAt = String(performance.now());
  status();
  requestRender();
}

const createsObject = (p) => (p.kind === 'click' || p.kind === 'stroke') && p.object_id == null;
// a click or stroke that creates an object and is not answered yet (an answered stroke may still be drawn from
// `pending` while its overlay loads: the object it made is known by then)
const creating = () => pending.some((e) => createsObject(e.payload) && e.payload.seq > acked);

function sendOrHold(kind, fields) {  // a click right after a click that creates an object refines that object
  if (held.length || creating()) held.push({ kind, fields });
  else send(kind, fields);
}

function flushHeld() {
  if (creating()) return;
  while (held.length) {
    const { kind, fields } = held.shift();
    const o = singleSelected(effectiveObjects());
    send(kind, Object.assign({}, fields, { object_id: o ? o.id : null }));
    if (createsObject(pending[pending.length - 1].payload)) return;
  }
}

function selectedIds() {
  return Array.from(selection).filter((id) => id != null);
}

function undo() { if (value) send('undo'); }
function redo() { if (value) send('redo'); }

function chooseClass(index) {
  const classes = (value && value.classes) || [];
  if (index >= classes.length) return false;
  setClass(classes[index].name);
  const ids = selectedIds();
  if (ids.length) send('relabel', { object_ids: ids, class_name: classes[index].name });
  return true;
}

function setClass(name) {
  currentClass = name;
  if (ui.cls.value !== name) ui.cls.value = name;
}

function deleteHidden() {
  const ids = effectiveObjects().filter((o) => !o.temp && isHidden(o)).map((o) => o.id);
  if (ids.length) send('delete', { object_ids: ids });
}

// ---- the value from the server --------------------------------------------------------------------------

function onValue(v) {
  root.dataset.receivedAt = String(performance.now());
  v = v && typeof v === 'object' ? v : null;
  // gradio can hand over the replies to quick edits out of order (trigger_mode "multiple"): an older one is stale.
  // Its edit is answered all the same: the newer value shown already has it (the server stamps each value after
  // reading the project, under the project's lock)
  if (v && value && v.revision < value.revision) {
    root.dataset.stale = String(Number(root.dataset.stale || 0) + 1);
    if (v.seq != null && v.image_id === value.image_id) {
      acked = Math.max(acked, v.seq); seq = Math.max(seq, v.seq);
      pending = pending.filter((e) => e.payload.seq > acked || (e.payload.kind === 'stroke' && overlayLoading));
      flushHeld(); status(); requestRender();
    }
    return;
  }
  const newImage = !v || !value || v.image_id !== value.image_id;
  value = v;
  note = null;
  if (!v) {
    pending = []; held = []; selection.clear(); drag = null;
    img = null; imgUrl = null; overlay = null; overlayUrl = null;
    status(); requestRender();
    return;
  }
  const mine = v.seq != null ? pending.find((e) => e.payload.seq === v.seq) : null;
  const pickedSince = mine != null && mine.picked !== picked;  // the person chose another selection meanwhile
  if (v.seq != null) { acked = Math.max(acked, v.seq); seq = Math.max(seq, v.seq); }
  if (newImage) { pending = []; held = []; selection.clear(); drag = null; view.fit = true; }
  const ourl = fileUrl(v.overlay);
  if (ourl !== overlayUrl || newImage) loadOverlay(ourl, v, newImage);
  else if (overlay) overlay.objects = (v.objects || []).map((o) => o.id);  // the same masks, this value's order
  // an acknowledged stroke stays drawn until the overlay that shows it has loaded
  pending = pending.filter((e) => e.payload.seq > acked || (e.payload.kind === 'stroke' && overlayLoading));

  const ids = new Set((v.objects || []).map((o) => o.id));
  if (v.selected != null && ids.has(v.selected) && !pickedSince) selection = new Set([v.selected]);
  else selection = new Set(Array.from(selection).filter((id) => ids.has(id)));

  syncClasses(v.classes || []);
  ui.undo.disabled = !v.can_undo;
  ui.redo.disabled = !v.can_redo;

  const url = fileUrl(v.image);
  if (url !== imgUrl || newImage) loadImage(url, v.image_id);
  if (view.fit) fitView();
  flushHeld();
  status();
  requestRender();
}

function syncClasses(classes) {
  const key = JSON.stringify(classes);
  if (key !== classesKey) {
    classesKey = key;
    ui.cls.textContent = '';
    classes.forEach((c, i) => {
      const opt = document.createElement('option');
      opt.value = c.name;
      opt.textContent = i < 9 ? `${i + 1}: ${c.name}` : c.name;
      ui.cls.appendChild(opt);
    });
  }
  const names = classes.map((c) => c.name);
  setClass(names.includes(currentClass) ? currentClass : names.length ? names[0] : null);
}

function fileUrl(f) {  // gradio fills "/gradio_api/file=..."; behind a root path it must start at gradio's root
  const url = f && f.url;
  if (!url || !url.startsWith('/')) return url || null;
  const base = (window.gradio_config && window.gradio_config.root) || '';
  return base.replace(/\/$/, '') + url;
}

function loadImage(url, imageId) {
  imgUrl = url;
  if (imageId !== imgImageId) img = null;  // the same image keeps showing while a new copy loads
  if (!url) return;
  const im = new Image();
  im.decoding = 'async';
  im.onload = () => {
    if (imgUrl !== url) return;
    img = im; imgImageId = imageId;
    requestRender();
  };
  im.onerror = () => {
    if (imgUrl !== url) return;
    note = 'The image could not be loaded.';
    status();
  };
  im.src = url;
}

function loadOverlay(url, v, newImage) {
  overlayUrl = url;
  if (newImage || !url) overlay = null;
  overlayLoading = !!url;
  if (!url) return;
  // the pixel value k of the overlay means objects[k - 1] of the value that carried it
  const objects = (v.objects || []).map((o) => o.id);
  const revision = v.revision;
  const im = new Image();
  im.onload = () => {
    if (overlayUrl !== url) return;
    const off = document.createElement('canvas');
    off.width = im.naturalWidth; off.height = im.naturalHeight;
    const octx = off.getContext('2d', { willReadFrequently: true });
    octx.drawImage(im, 0, 0);
    const data = octx.getImageData(0, 0, off.width, off.height);
    const px = data.data;
    const index = new Uint16Array(off.width * off.height);
    for (let i = 0, j = 0; i < index.length; i++, j += 4) index[i] = px[j] + 256 * px[j + 1];
    overlay = { url, objects, revision, index, canvas: off, ctx: octx, data, key: null };
    overlayLoading = false;
    pending = pending.filter((e) => e.payload.seq > acked);
    flushHeld(); status();
    requestRender();
  };
  im.onerror = () => {
    if (overlayUrl !== url) return;
    overlayLoading = false;
    pending = pending.filter((e) => e.payload.seq > acked);
    note = 'The mask overlay could not be loaded.';
    flushHeld(); status();
  };
  im.src = url;
}

function colorOverlay(objs) {  // recolour the overlay when colours, visibility or objects change
  const byId = new Map(objs.map((o) => [o.id, o]));
  const lut = new Uint32Array(overlay.objects.length + 1);  // an index past the end reads undefined: 0
  const parts = [];
  overlay.objects.forEach((id, k) => {
    const o = byId.get(id);
    if (!o || isHidden(o)) { parts.push(0); return; }
    const c = colorOf(o);
    lut[k + 1] = ((255 << 24) | (c[2] << 16) | (c[1] << 8) | c[0]) >>> 0;
    parts.push(lut[k + 1]);
  });
  const key = parts.join(',');
  if (key === overlay.key) return;
  overlay.key = key;
  const out = new Uint32Array(overlay.data.data.buffer);
  const index = overlay.index;
  for (let i = 0; i < index.length; i++) out[i] = lut[index[i]];
  overlay.ctx.putImageData(overlay.data, 0, 0);
}

// ---- drawing --------------------------------------------------------------------------------------------

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
  const dpr = size.dpr;
  ctx.setTransform(1, 0, 0, 1, 0, 0);
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  root.classList.toggle('gc-no-image', !value);
  if (!value) {
    root.dataset.revision = '';
    root.dataset.visibleBoxes = '0';
    return;
  }
  const objs = effectiveObjects();
  const { s, tx, ty } = view;
  const imageSpace = () => ctx.setTransform(dpr * s, 0, 0, dpr * s, dpr * tx, dpr * ty);
  const screenSpace = () => ctx.setTransform(dpr, 0, 0, dpr, 0, 0);

  imageSpace();
  ctx.imageSmoothingEnabled = s < 2;  // pixels stay sharp when zoomed in for precise work
  if (img && imgImageId === value.image_id) ctx.drawImage(img, 0, 0, value.width, value.height);
  if (overlay && show.masks && opacity > 0) {
    colorOverlay(objs);
    ctx.imageSmoothingEnabled = false;
    ctx.globalAlpha = opacity;
    ctx.drawImage(overlay.canvas, 0, 0, value.width, value.height);
    ctx.globalAlpha = 1;
  }
  for (const { payload: p } of pending) if (p.kind === 'stroke') drawStroke(p.points, p.radius, p.erase, p);
  if (drag && drag.type === 'stroke') drawStroke(drag.points, drag.radius, drag.erase, drag);

  screenSpace();
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
  for (const o of objs) if (selection.has(o.id)) drawClicks(o.clicks);
  for (const { payload: p } of pending) {
    if (p.kind === 'click' && (p.object_id == null || !objs.some((o) => o.id === p.object_id))) drawClicks([[p.x, p.y, p.positive]]);
  }
  for (const h of held) if (h.kind === 'click') drawClicks([[h.fields.x, h.fields.y, h.fields.positive]]);
  if (drag && drag.type === 'draw' && drag.moved) {
    const a = toScreen(drag.box[0], drag.box[1]), b = toScreen(drag.box[2], drag.box[3]);
    ctx.setLineDash([6, 4]);
    ctx.strokeStyle = rgba(classColor(currentClass), 1);
    ctx.lineWidth = 2;
    ctx.strokeRect(a.x, a.y, b.x - a.x, b.y - a.y);
    ctx.setLineDash([]);
  }
  if (hover && (tool === 'brush' || tool === 'eraser') && !spaceHeld) {
    ctx.beginPath();
    ctx.arc(hover.x, hover.y, Math.max(radius * s, 1), 0, 2 * Math.PI);
    ctx.strokeStyle = 'rgba(255,255,255,0.9)';
    ctx.lineWidth = 1.5;
    ctx.stroke();
    ctx.beginPath();
    ctx.arc(hover.x, hover.y, Math.max(radius * s, 1) + 1.5, 0, 2 * Math.PI);
    ctx.strokeStyle = 'rgba(0,0,0,0.7)';
    ctx.lineWidth = 1;
    ctx.stroke();
  }

  root.dataset.visibleBoxes = String(visible);
  root.dataset.hiddenBoxes = String(hidden);
  root.dataset.selected = selectedIds().join(',');
  root.dataset.imageId = String(value.image_id);
  root.dataset.imageReady = img && imgImageId === value.image_id ? '1' : '0';
  const now = String(performance.now());
  if (drawnRevision !== value.revision) {  // for tests and the benchmark: when a server value was first drawn
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

function drawStroke(points, r, erase, p) {
  if (!points.length) return;
  ctx.save();
  ctx.globalAlpha = erase ? 0.5 : Math.max(opacity, 0.35);
  ctx.strokeStyle = ctx.fillStyle = erase ? 'rgb(255,255,255)' : rgba(classColor(p.class_name), 1);
  ctx.lineWidth = 2 * r;
  ctx.lineCap = ctx.lineJoin = 'round';
  ctx.beginPath();
  if (points.length === 1) {
    ctx.arc(points[0][0], points[0][1], r, 0, 2 * Math.PI);
    ctx.fill();
  } else {
    ctx.moveTo(points[0][0], points[0][1]);
    for (const q of points) ctx.lineTo(q[0], q[1]);
    ctx.stroke();
  }
  ctx.restore();
}

function drawBox(o, selected) {
  const c = colorOf(o);
  const a = toScreen(o.box[0], o.box[1]), b = toScreen(o.box[2], o.box[3]);
  ctx.lineWidth = selected ? 3 : 2;
  ctx.strokeStyle = rgba(c, 1);
  ctx.setLineDash(o.temp || o.phrase ? [6, 4] : []);
  ctx.strokeRect(a.x, a.y, b.x - a.x, b.y - a.y);
  ctx.setLineDash([]);
  if (selected) {
    ctx.fillStyle = rgba(c, 0.12);
    ctx.fillRect(a.x, a.y, b.x - a.x, b.y - a.y);
  }
  const parts = [];
  if (show.labels) parts.push(o.class_name);
  if (show.scores && o.source === 'model' && o.score != null) parts.push(o.score.toFixed(2));
  if (!parts.length) return;
  const text = parts.join(' ');
  ctx.font = '12px sans-serif';
  const w = ctx.measureText(text).width + 6, h = 16;
  const inside = a.y - h < 0;  // a box at the top edge gets its label inside
  const y = inside ? Math.max(a.y, 0) : a.y - h;
  ctx.fillStyle = rgba(c, 0.85);
  ctx.fillRect(a.x - (selected ? 1.5 : 1), y, w, h);
  const light = c[0] * 0.299 + c[1] * 0.587 + c[2] * 0.114 > 150;
  ctx.fillStyle = light ? '#000' : '#fff';
  ctx.textBaseline = 'middle';
  ctx.fillText(text, a.x + 2, y + h / 2 + 0.5);
}

function drawHandles(o) {
  ctx.fillStyle = '#fff';
  ctx.strokeStyle = rgba(colorOf(o), 1);
  ctx.lineWidth = 1.5;
  for (const [, x, y] of handlesOf(o.box)) {
    ctx.fillRect(x - HANDLE, y - HANDLE, 2 * HANDLE, 2 * HANDLE);
    ctx.strokeRect(x - HANDLE, y - HANDLE, 2 * HANDLE, 2 * HANDLE);
  }
}

function drawClicks(clicks) {
  for (const [x, y, pos] of clicks || []) {
    const p = toScreen(x, y);
    ctx.beginPath();
    ctx.arc(p.x, p.y, 5, 0, 2 * Math.PI);
    ctx.fillStyle = pos ? 'rgb(40,200,80)' : 'rgb(230,50,50)';
    ctx.fill();
    ctx.lineWidth = 1.5;
    ctx.strokeStyle = '#fff';
    ctx.stroke();
    ctx.beginPath();
    ctx.arc(p.x, p.y, 6.5, 0, 2 * Math.PI);
    ctx.lineWidth = 1;
    ctx.strokeStyle = 'rgba(0,0,0,0.8)';
    ctx.stroke();
  }
}

function status() {
  const msg = note || (value && value.message) || (value ? '' : 'No image');
  ui.message.textContent = msg;
  ui.message.classList.toggle('gc-has-message', !!msg);
  const n = pending.length + held.length;
  ui.pending.textContent = n ? `saving ${n}…` : '';
  root.dataset.pending = String(n);
}

// ---- pointer --------------------------------------------------------------------------------------------

function setTool(t) {
  tool = t;
  root.dataset.tool = t;
  for (const b of ui.tools) b.setAttribute('aria-pressed', String(b.dataset.tool === t));
  requestRender();
}

function setCursor(p) {
  let c = '';
  if (drag && drag.type === 'pan') c = 'grabbing';
  else if (spaceHeld) c = 'grab';
  else if (tool === 'box' && p && value) {
    const objs = effectiveObjects();
    const h = handleAt(p, objs);
    if (h) c = `${h.name}-resize`;
    else if (drag && drag.type === 'move') c = 'move';
    else if (hitTest(p, objs)) c = 'move';
  }
  root.dataset.cursor = c;
}

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
  const q = toImage(p);
  if (e.button === 1 || (e.button === 0 && spaceHeld)) {
    drag = { type: 'pan', x: p.x, y: p.y, tx: view.tx, ty: view.ty };
  } else if (tool === 'box' && e.button === 0) {
    const objs = effectiveObjects();
    const h = e.shiftKey ? null : handleAt(p, objs);
    const hit = e.shiftKey ? null : hitTest(p, objs);
    if (h) {
      drag = { type: 'resize', id: h.object.id, name: h.name, start: q, box: h.object.box.slice(), orig: h.object.box.slice(), p0: p };
    } else if (hit && (e.ctrlKey || e.metaKey)) {
      if (selection.has(hit.id)) selection.delete(hit.id); else selection.add(hit.id);
      picked++;
    } else if (hit) {
      const wasSelected = selection.size === 1 && selection.has(hit.id);
      if (!wasSelected) { selection = new Set([hit.id]); picked++; }
      drag = { type: 'move', id: hit.id, start: q, p0: p, dx: 0, dy: 0, orig: hit.box.slice(), wasSelected };
    } else {
      const c = { x: clamp(q.x, 0, value.width), y: clamp(q.y, 0, value.height) };
      drag = { type: 'draw', start: c, box: [c.x, c.y, c.x, c.y], p0: p };
    }
  } else if (tool === 'click' && (e.button === 0 || e.button === 2)) {
    if (!inImage(q)) return;
    const o = singleSelected(effectiveObjects());
    sendOrHold('click', { object_id: o ? o.id : null, x: q.x, y: q.y,
      positive: positive && !e.altKey && e.button !== 2, class_name: currentClass || '' });
  } else if ((tool === 'brush' || tool === 'eraser') && e.button === 0) {
    const o = singleSelected(effectiveObjects());
    drag = { type: 'stroke', points: [[q.x, q.y]], radius, erase: tool === 'eraser', class_name: currentClass || '',
      object_id: o ? o.id : null, chained: !o && (creating() || held.length > 0) };
  } else {
    return;
  }
  if (drag) {
    drag.pointerId = e.pointerId;
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
  if (drag && e.pointerId === drag.pointerId) {
    const q = toImage(p);
    if (drag.type === 'pan') {
      view.tx = drag.tx + p.x - drag.x;
      view.ty = drag.ty + p.y - drag.y;
      view.fit = false;
    } else if (drag.type === 'stroke') {
      const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
      for (const ev of events.length ? events : [e]) {
        const r = toImage(local(ev));
        drag.points.push([r.x, r.y]);
      }
    } else {
      drag.moved = drag.moved || Math.abs(p.x - drag.p0.x) >= DRAG_MIN || Math.abs(p.y - drag.p0.y) >= DRAG_MIN;
      if (drag.type === 'draw') {
        drag.box = [drag.start.x, drag.start.y, clamp(q.x, 0, value.width), clamp(q.y, 0, value.height)];
      } else if (drag.type === 'move') {  // the box keeps its size and stops at the image's edge
        const b = drag.orig;
        drag.dx = clamp(q.x - drag.start.x, -b[0], value.width - b[2]);
        drag.dy = clamp(q.y - drag.start.y, -b[1], value.height - b[3]);
      } else if (drag.type === 'resize') {
        const b = drag.orig.slice();
        const dx = q.x - drag.start.x, dy = q.y - drag.start.y;
        if (drag.name.includes('w')) b[0] += dx;
        if (drag.name.includes('e')) b[2] += dx;
        if (drag.name.includes('n')) b[1] += dy;
        if (drag.name.includes('s')) b[3] += dy;
        drag.box = b;
      }
    }
  }
  setCursor(p);
  requestRender();
});

function finish(e, cancelled) {
  if (!drag || e.pointerId !== drag.pointerId) return;
  const d = drag;
  drag = null;
  if (canvas.hasPointerCapture(e.pointerId)) canvas.releasePointerCapture(e.pointerId);
  if (!cancelled && value) {
    if (d.type === 'draw') {
      const b = normBox(d.box);
      if (d.moved && b[2] > b[0] && b[3] > b[1]) {
        selection.clear();
        send('add', { box: b, class_name: currentClass || '' });
      } else if (!d.moved) {
        selection.clear();
        picked++;
        lastClick = null;
      }
    } else if (d.type === 'move' && d.moved) {
      if (d.dx !== 0 || d.dy !== 0) send('move', { object_id: d.id, dx: d.dx, dy: d.dy });
      lastClick = null;
    } else if (d.type === 'move') {
      cycle(d);
    } else if (d.type === 'resize' && d.moved) {
      send('resize', { object_id: d.id, box: normBox(d.box) });
    } else if (d.type === 'stroke') {
      const q = toImage(local(e)), last = d.points[d.points.length - 1];
      if (q.x !== last[0] || q.y !== last[1]) d.points.push([q.x, q.y]);
      let id = d.object_id;
      if (d.chained && !creating() && !held.length) {  // begun before the object it chains on was answered
        const o = singleSelected(effectiveObjects());
        id = o ? o.id : null;
      }
      sendOrHold('stroke', { object_id: id, points: d.points, radius: d.radius, erase: d.erase, class_name: d.class_name });
    }
  }
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

// ---- keys -----------------------------------------------------------------------------------------------

// text fields keep every key; other inputs (checkboxes, sliders, buttons) pass the canvas' keys on
const NOT_TEXT = ['button', 'checkbox', 'radio', 'range', 'color', 'file', 'submit', 'reset', 'image'];
const isTextField = (t) => !!t && (t.isContentEditable || ['TEXTAREA', 'SELECT'].includes(t.tagName)
  || (t.tagName === 'INPUT' && !NOT_TEXT.includes((t.type || 'text').toLowerCase())));

function onKey(e) {
  if (isTextField(e.target)) return;
  const k = e.key;
  const lower = k.length === 1 ? k.toLowerCase() : k;
  const ctrl = e.ctrlKey || e.metaKey;
  let used = true;
  if (ctrl && lower === 'z') { if (e.shiftKey) redo(); else undo(); }
  else if (ctrl && lower === 'y') redo();
  else if (ctrl || e.altKey) used = false;
  else if (k === 'Delete' || k === 'Backspace') {
    const ids = selectedIds();
    if (ids.length) { send('delete', { object_ids: ids }); selection.clear(); } else used = false;
  } else if (/^[1-9]$/.test(k)) used = chooseClass(Number(k) - 1);
  else if (k === 'Escape') {
    if (drag) cancelDrag();
    else if (selection.size || pending.length || held.length) { selection.clear(); picked++; }  // ends a chain
    else used = false;  // nothing to deselect: the page's own Esc
  } else if (k === ' ') { spaceHeld = true; setCursor(hover); }
  else if (TOOL_KEYS[lower] && !e.shiftKey) setTool(TOOL_KEYS[lower]);
  else if (k === '[' || k === ']') setRadius(k === ']' ? radius * 1.25 : radius / 1.25);
  else if (lower === 'f') { fitView(); }
  else used = false;
  if (used) {
    e.preventDefault();
    e.stopPropagation();
    requestRender();
  }
}
root.addEventListener('keydown', onKey);
// the canvas' keys also work while the focus is elsewhere on the page (a button just clicked, the page itself),
// as long as the canvas is shown and the focus is not in a text field. Space and Enter stay with a focused button.
function onPageKey(e) {
  if (!root.isConnected) { document.removeEventListener('keydown', onPageKey); return; }  // remounted: a new canvas
  if (e.defaultPrevented || root.contains(e.target) || !root.getClientRects().length) return;
  if (e.key === ' ' || e.key === 'Enter') return;
  onKey(e);
}
document.addEventListener('keydown', onPageKey);
root.addEventListener('keyup', (e) => {
  if (e.key === ' ') { spaceHeld = false; setCursor(hover); e.preventDefault(); e.stopPropagation(); }
});
root.addEventListener('blur', () => { spaceHeld = false; }, true);

// ---- toolbar --------------------------------------------------------------------------------------------

function setRadius(r) {
  radius = Math.round(clamp(r, 1, MAX_RADIUS) * 10) / 10;
  ui.radius.value = String(radius);
  requestRender();
}

for (const b of ui.tools) b.addEventListener('click', () => setTool(b.dataset.tool));
ui.sign.addEventListener('click', () => {
  positive = !positive;
  ui.sign.textContent = positive ? '+' : '−';
  ui.sign.setAttribute('aria-pressed', String(!positive));
  root.dataset.positive = String(positive);
});
ui.radius.addEventListener('input', () => {
  const r = Number(ui.radius.value);
  if (r > 0) { radius = clamp(r, 1, MAX_RADIUS); requestRender(); }
});
ui.radius.addEventListener('change', () => setRadius(radius));
ui.cls.addEventListener('change', () => {
  const classes = (value && value.classes) || [];
  const i = classes.findIndex((c) => c.name === ui.cls.value);
  if (i >= 0) chooseClass(i);
});
ui.opacity.addEventListener('input', () => { opacity = Number(ui.opacity.value); requestRender(); });
for (const c of ui.shows) c.addEventListener('change', () => { show[c.dataset.show] = c.checked; requestRender(); });
ui.threshold.addEventListener('input', () => {
  threshold = Number(ui.threshold.value);
  ui.thresholdText.textContent = threshold.toFixed(2);
  const hidden = new Set(effectiveObjects().filter(isHidden).map((o) => o.id));
  selection = new Set(Array.from(selection).filter((id) => !hidden.has(id)));  // no edits on what is not shown
  requestRender();
});
ui.deleteHidden.addEventListener('click', deleteHidden);
ui.undo.addEventListener('click', undo);
ui.redo.addEventListener('click', redo);
ui.fit.addEventListener('click', () => { fitView(); requestRender(); });

new ResizeObserver(() => { if (resize()) requestRender(); }).observe(stage);
setTool('box');
root.dataset.positive = 'true';
watch('value', () => onValue(props.value));
onValue(props.value);

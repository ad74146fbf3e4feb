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
    pending = []; held = []; selection.clear(); negatives.clear(); drag = null;
    img = null; imgUrl = null; overlay = null; overlayUrl = null;
    status(); requestRender();
    return;
  }
  const mine = v.seq != null ? pending.find((e) => e.payload.seq === v.seq) : null;
  const pickedSince = mine != null && mine.picked !== picked;  // the person chose another selection meanwhile
  if (v.seq != null) { acked = Math.max(acked, v.seq); seq = Math.max(seq, v.seq); }
  if (newImage) { pending = []; held = []; selection.clear(); negatives.clear(); drag = null; view.fit = true; }
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
    root.dataset.overlayLoadedAt = String(performance.now());
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

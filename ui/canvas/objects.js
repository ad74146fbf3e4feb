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
  if (drag) drag.tool.preview(objs, drag);  // e.g. the box being dragged
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

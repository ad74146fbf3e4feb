// ---- the box tool: select, move, resize; drag on empty space: a new box --------------------------------
// Its gestures: {type: 'resize', id, name, start, box, orig, p0}, {type: 'move', id, start, p0, dx, dy, orig,
// wasSelected}, {type: 'draw', start, box, p0}; start and boxes in image px, p0 in CSS px; `moved` once the
// pointer went DRAG_MIN CSS px from p0.

const BOX_TOOL = {
  keys: ['v', 'b'],

  down(e, p, q) {
    if (e.button !== 0) return false;
    const objs = effectiveObjects();
    const h = e.shiftKey || e.altKey ? null : handleAt(p, objs);
    const hit = e.shiftKey ? null : hitTest(p, objs);
    if (h) return { type: 'resize', id: h.object.id, name: h.name, start: q, box: h.object.box.slice(), orig: h.object.box.slice(), p0: p };
    if (hit && e.altKey) {  // a counter-example for find similar (x): marked, not selected
      if (negatives.has(hit.id)) negatives.delete(hit.id); else { negatives.add(hit.id); selection.delete(hit.id); }
      picked++;
      return null;
    }
    if (hit && (e.ctrlKey || e.metaKey)) {
      if (selection.has(hit.id)) selection.delete(hit.id); else { selection.add(hit.id); negatives.delete(hit.id); }
      picked++;
      return null;
    }
    if (hit) {
      const wasSelected = selection.size === 1 && selection.has(hit.id);
      if (!wasSelected) { selection = new Set([hit.id]); negatives.delete(hit.id); picked++; }
      return { type: 'move', id: hit.id, start: q, p0: p, dx: 0, dy: 0, orig: hit.box.slice(), wasSelected };
    }
    const c = { x: clamp(q.x, 0, value.width), y: clamp(q.y, 0, value.height) };
    return { type: 'draw', start: c, box: [c.x, c.y, c.x, c.y], p0: p };
  },

  move(d, e, p, q) {
    d.moved = d.moved || Math.abs(p.x - d.p0.x) >= DRAG_MIN || Math.abs(p.y - d.p0.y) >= DRAG_MIN;
    if (d.type === 'draw') {
      d.box = [d.start.x, d.start.y, clamp(q.x, 0, value.width), clamp(q.y, 0, value.height)];
    } else if (d.type === 'move') {  // the box keeps its size and stops at the image's edge
      const b = d.orig;
      d.dx = clamp(q.x - d.start.x, -b[0], value.width - b[2]);
      d.dy = clamp(q.y - d.start.y, -b[1], value.height - b[3]);
    } else if (d.type === 'resize') {
      const b = d.orig.slice();
      const dx = q.x - d.start.x, dy = q.y - d.start.y;
      if (d.name.includes('w')) b[0] += dx;
      if (d.name.includes('e')) b[2] += dx;
      if (d.name.includes('n')) b[1] += dy;
      if (d.name.includes('s')) b[3] += dy;
      d.box = b;
    }
  },

  up(d) {
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
    }
  },

  cursor(p, d) {
    if (!p || !value) return '';
    const objs = effectiveObjects();
    const h = handleAt(p, objs);
    if (h) return `${h.name}-resize`;
    if (d && d.type === 'move') return 'move';
    return hitTest(p, objs) ? 'move' : '';
  },

  draw(layer, d) {  // the new box being drawn, dashed
    if (layer !== 'screen' || !d || d.type !== 'draw' || !d.moved) return;
    const a = toScreen(d.box[0], d.box[1]), b = toScreen(d.box[2], d.box[3]);
    ctx.setLineDash([6, 4]);
    ctx.strokeStyle = rgba(classColor(currentClass), 1);
    ctx.lineWidth = 2;
    ctx.strokeRect(a.x, a.y, b.x - a.x, b.y - a.y);
    ctx.setLineDash([]);
  },

  preview(objs, d) {  // the box being moved or resized, at its new place
    if ((d.type !== 'move' && d.type !== 'resize') || !d.moved) return;
    const o = objs.find((x) => x.id === d.id);
    const b = d.orig;
    if (o) o.box = d.type === 'move' ? [b[0] + d.dx, b[1] + d.dy, b[2] + d.dx, b[3] + d.dy] : normBox(d.box);
  },
};

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

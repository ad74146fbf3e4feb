// ---- the brush and the eraser: a stroke on the selected object (the brush with none: a new object) ---------
// Their gesture: {type: 'stroke', points: [[x, y], ...] in image px, radius, erase, class_name, object_id,
// chained: begun while the object it would go on was still being created}.

function strokeTool(erase, keys) {
  return {
    keys,

    down(e, p, q) {
      if (e.button !== 0) return false;
      const o = singleSelected(effectiveObjects());
      return { type: 'stroke', points: [[q.x, q.y]], radius, erase, class_name: currentClass || '',
        object_id: o ? o.id : null, chained: !o && (creating() || held.length > 0) };
    },

    move(d, e) {  // every sample of the move, the coalesced events included
      const events = e.getCoalescedEvents ? e.getCoalescedEvents() : [];
      for (const ev of events.length ? events : [e]) {
        const r = toImage(local(ev));
        d.points.push([r.x, r.y]);
      }
    },

    up(d, e) {
      const q = toImage(local(e)), last = d.points[d.points.length - 1];
      if (q.x !== last[0] || q.y !== last[1]) d.points.push([q.x, q.y]);
      let id = d.object_id;
      if (d.chained && !creating() && !held.length) {  // begun before the object it chains on was answered
        const o = singleSelected(effectiveObjects());
        id = o ? o.id : null;
      }
      sendOrHold('stroke', { object_id: id, points: d.points, radius: d.radius, erase: d.erase, class_name: d.class_name });
    },

    cursor: () => '',

    draw(layer, d, active) {  // the stroke in progress (image px); the brush's outline at the pointer (CSS px)
      if (layer === 'image' && d) drawStroke(d.points, d.radius, d.erase, d);
      if (layer !== 'screen' || !active || !hover || spaceHeld) return;
      ctx.beginPath();
      ctx.arc(hover.x, hover.y, Math.max(radius * view.s, 1), 0, 2 * Math.PI);
      ctx.strokeStyle = 'rgba(255,255,255,0.9)';
      ctx.lineWidth = 1.5;
      ctx.stroke();
      ctx.beginPath();
      ctx.arc(hover.x, hover.y, Math.max(radius * view.s, 1) + 1.5, 0, 2 * Math.PI);
      ctx.strokeStyle = 'rgba(0,0,0,0.7)';
      ctx.lineWidth = 1;
      ctx.stroke();
    },

    preview() {},
  };
}

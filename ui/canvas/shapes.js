// ---- shapes: a stroke, a box with its label, the resize handles, SAM clicks (on ctx, as set by render) ---

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
  const negative = negatives.has(o.id);
  ctx.setLineDash(o.temp || o.phrase || negative ? [6, 4] : []);
  if (negative) ctx.strokeStyle = 'rgba(220, 30, 30, 1)';
  ctx.strokeRect(a.x, a.y, b.x - a.x, b.y - a.y);
  ctx.setLineDash([]);
  if (selected) {
    ctx.fillStyle = rgba(c, 0.12);
    ctx.fillRect(a.x, a.y, b.x - a.x, b.y - a.y);
  }
  const parts = [];
  if (negative) parts.push('not');
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

// ---- pan: the middle button, or space + drag, with any tool ------------------------------------------------
// Not on the toolbar: pointer-down hands a gesture to it when `panGesture(e)`, whatever the current tool.
// Its gesture: {type: 'pan', x, y (CSS px where it began), tx, ty (the view's translation then)}.

const panGesture = (e) => e.button === 1 || (e.button === 0 && spaceHeld);

const PAN_TOOL = {
  keys: [],  // space, held: see keys.js
  down: (e, p) => ({ type: 'pan', x: p.x, y: p.y, tx: view.tx, ty: view.ty }),
  move(d, e, p) {
    view.tx = d.tx + p.x - d.x;
    view.ty = d.ty + p.y - d.y;
    view.fit = false;
  },
  up() {},
  cursor: (p, d) => (d && d.tool === PAN_TOOL ? 'grabbing' : 'grab'),
  draw() {},
  preview() {},
};

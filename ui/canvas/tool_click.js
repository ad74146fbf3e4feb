// ---- the SAM click tool: a click refines the selected object, or creates one -----------------------------
// No gesture: the click is sent on pointer-down (held while an object it would refine is being created).
// Alt-click, right-click or the +/- toggle (`positive`) make it negative.

const CLICK_TOOL = {
  keys: ['k'],

  down(e, p, q) {
    if ((e.button !== 0 && e.button !== 2) || !inImage(q)) return false;
    const o = singleSelected(effectiveObjects());
    sendOrHold('click', { object_id: o ? o.id : null, x: q.x, y: q.y,
      positive: positive && !e.altKey && e.button !== 2, class_name: currentClass || '' });
    return null;
  },
  move() {},
  up() {},
  cursor: () => '',
  draw() {},
  preview() {},
};

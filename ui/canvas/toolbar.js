// ---- the toolbar, then the mount: the last part, it starts the canvas ------------------------------------

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
ui.similar.addEventListener('click', () => { findSimilar('image'); requestRender(); });
ui.similarAll.addEventListener('click', () => { findSimilar('project'); requestRender(); });
ui.undo.addEventListener('click', undo);
ui.redo.addEventListener('click', redo);
ui.fit.addEventListener('click', () => { fitView(); requestRender(); });

new ResizeObserver(() => { if (resize()) requestRender(); }).observe(stage);
setTool('box');
root.dataset.positive = 'true';
watch('value', () => onValue(props.value));
onValue(props.value);

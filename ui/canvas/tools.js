// ---- the table of tools ----------------------------------------------------------------------------------
// One entry per tool; a new tool is one entry here (plus its toolbar button, data-tool=<name>, in the template
// of ui/canvas/__init__.py). Every tool has the same handlers (tests/test_canvas_js.py checks it):
//   keys: [key, ...]             lower-case keys that choose the tool (no Ctrl, Alt or Shift)
//   down(e, p, q) -> gesture | null | false
//                                pointer-down (p: CSS px on the canvas, q: image px): a gesture object to follow
//                                the pointer with (it becomes `drag`, with .tool and .pointerId added), null when
//                                done at once, false when the event is not for the tool (left to the page)
//   move(d, e, p, q)             a pointer move of its gesture d
//   up(d, e)                     its gesture ended (not called when cancelled, or with no value)
//   cursor(p, d) -> string       data-cursor over p ('' the tool's default); d: the gesture in progress, if any
//   draw(layer, d, active)       draws, on layer 'image' (under the boxes, image px) or 'screen' (over, CSS px),
//                                its gesture d (or null) and, when it is the current tool (active), its marks
//   preview(objs, d)             changes the drawn objects as its gesture d shows them (edits them in place)

const TOOLS = {
  box: BOX_TOOL,
  click: CLICK_TOOL,
  brush: strokeTool(false, ['u']),
  eraser: strokeTool(true, ['e']),
  pan: PAN_TOOL,
};

const TOOL_KEYS = {};  // key -> tool name
for (const [name, t] of Object.entries(TOOLS)) for (const k of t.keys) TOOL_KEYS[k] = name;

function setTool(t) {
  tool = t;
  root.dataset.tool = t;
  for (const b of ui.tools) b.setAttribute('aria-pressed', String(b.dataset.tool === t));
  requestRender();
}

function setCursor(p) {  // over p (CSS px or null): a pan in progress or space held shows the pan's cursor
  const t = (drag && drag.tool === PAN_TOOL) || spaceHeld ? PAN_TOOL : TOOLS[tool];
  root.dataset.cursor = t.cursor(p, drag);
}

function drawTools(layer) {  // the gesture in progress (whoever began it), then the current tool's marks
  const active = TOOLS[tool];
  if (drag && drag.tool !== active) drag.tool.draw(layer, drag, false);
  active.draw(layer, drag && drag.tool === active ? drag : null, true);
}

// The labeling canvas (gr.HTML js_on_load): runs once per mount with element, trigger, props, watch.
// The server's value is the truth: every edit goes out as trigger('edit', payload) and the canvas is redrawn
// from the value that comes back. Local edits in flight are drawn on top of it until their reply arrives.
// The contract (value and payloads) is documented in ui/canvas/__init__.py.
//
// This file is the first of the parts that ui/canvas/__init__.py joins, in its PARTS order, into the one
// js_on_load body: the page's elements and the state every part shares. The pointer tools are a table
// (tools.js: one entry per tool, its handlers in tool_*.js); the other parts are helpers over this state.

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
  similar: root.querySelector('.gc-similar'),
  similarAll: root.querySelector('.gc-similar-all'),
  undo: root.querySelector('.gc-undo'),
  redo: root.querySelector('.gc-redo'),
  fit: root.querySelector('.gc-fit'),
  message: root.querySelector('.gc-message'),
  pending: root.querySelector('.gc-pending'),
};

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
let negatives = new Set();  // boxes marked with Alt: what find similar must not find (counter-examples)
let picked = 0;  // how many times the person changed the selection (a reply's "selected" must not undo a newer pick)
let tool = 'box';        // the current tool: a key of TOOLS (tools.js)
let positive = true;
let currentClass = null;
let classesKey = '';
const view = { s: 1, tx: 0, ty: 0, fit: true };
const size = { w: 0, h: 0, dpr: 1 };
let img = null, imgUrl = null, imgImageId = null;
let overlay = null, overlayUrl = null, overlayLoading = false;
let drag = null;         // the pointer gesture in progress: {tool, pointerId, ...} (the tool that began it owns it)
let hover = null;        // last pointer position over the canvas (CSS px)
let spaceHeld = false;
let note = null;         // a local message (e.g. an image that did not load)
let drawnRevision = null, drawnOverlay = null;
let frame = 0;
const show = { boxes: true, masks: true, labels: true, scores: true };
let opacity = Number(ui.opacity.value);
let threshold = Number(ui.threshold.value);
let radius = Number(ui.radius.value);

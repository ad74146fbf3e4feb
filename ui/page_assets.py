"""The page's fixed parts: its script and style (keyboard shortcuts, the upload area's drop, a pointer held
down), the scripts of two events, and its help and labels. Text only: ui/layout.py puts them in the page."""

from __future__ import annotations

import json

# letters the canvas does not use itself (it takes v, b, k, u, e, f, x, [, ], 1-9 and only while it has the focus)
SHORTCUTS = {"n": "next-btn", "p": "prev-btn", "r": "reviewed-btn", "s": "skip-btn", "g": "detect-btn"}
UPLOAD_LABEL = "Add images: click, or drop files here (several files, or a zip of images / COCO / YOLO)"
HEAD = """<script>
document.addEventListener('keydown', (e) => {
  const t = e.target;
  if (e.ctrlKey || e.metaKey || e.altKey || ['INPUT', 'TEXTAREA', 'SELECT'].includes(t.tagName) || t.isContentEditable) return;
  const id = SHORTCUTS[e.key];
  const el = id && document.getElementById(id);
  if (el) { el.click(); e.preventDefault(); }
});
// a pointer held down anywhere: the tick does not redraw the picture under an edit being made (BUSY_JS)
for (const name of ['pointerdown', 'pointerup', 'pointercancel']) {
  document.addEventListener(name, (e) => { window.gdinoPointerDown = name === 'pointerdown'; }, true);
}
// files dropped on the upload area go through its button's file input, as if chosen there
const uploadZone = (e) => e.target instanceof Element && e.target.closest('#uploads');
for (const name of ['dragenter', 'dragover']) document.addEventListener(name, (e) => {
  const zone = uploadZone(e);
  if (zone) { e.preventDefault(); zone.classList.add('dragging'); }
});
document.addEventListener('dragleave', (e) => { const zone = uploadZone(e); if (zone) zone.classList.remove('dragging'); });
document.addEventListener('drop', (e) => {
  const zone = uploadZone(e);
  const input = zone && zone.querySelector('input[type=file]');
  if (!input) return;
  e.preventDefault();
  zone.classList.remove('dragging');
  if (!e.dataTransfer || !e.dataTransfer.files.length) return;
  input.files = e.dataTransfer.files;
  input.dispatchEvent(new Event('change', {bubbles: true}));
});
</script>
<style>
#uploads { border: 2px dashed var(--border-color-primary); border-radius: var(--radius-lg); padding: 8px; }
#uploads.dragging { border-color: var(--color-accent); }
</style>""".replace("SHORTCUTS", json.dumps(SHORTCUTS))

# the tick's inputs as the page sends them; the last says whether this page is busy with a change of its own: a
# pointer held down, canvas edits not yet answered, or an action whose answer may bring another image (its
# progress shows on the canvas)
BUSY_JS = """(state, listFilter, id, stamp, busy) => {
  const root = document.querySelector('#canvas .gc-root');
  const pending = root ? Number(root.dataset.pending || 0) : 0;
  const acting = document.querySelector('#canvas [data-testid=status-tracker]:not(.hide)') !== null;
  return [state, listFilter, id, stamp, Boolean(window.gdinoPointerDown) || pending > 0 || acting];
}"""
# after the page has read a `?project=` link, take the credential out of the address bar
FORGET_LINK_JS = """() => {
  const u = new URL(window.location.href);
  if (u.searchParams.has('project')) { u.searchParams.delete('project'); window.history.replaceState(null, '', u.toString()); }
}"""
LINK_LABEL = ("Project link: opens this browser's project in any browser. Anyone with this link can see and edit "
              "the project; share it only with people you trust")

HELP = ("**Keys:** `n` next image, `p` previous, `r` mark reviewed, `s` skip, `g` detect. **On the picture** (keys "
        "work unless you are typing in a field): *Box* (`b`) draws a box on empty space, drags a box to move it (it "
        "stops at the edge, its size kept) and its handles to resize it; a second click at the same place selects the "
        "next box under the pointer; `1`-`9` give the selected box (or the next one) a class; `Delete` or `Backspace` "
        "removes it. *Click* (`k`) segments with SAM: a click adds a point (Alt-click or right-click: a negative one) "
        "to the selected object, or starts a new one; `Esc` ends. *Brush* (`u`) and *Eraser* (`e`) paint the selected "
        "object's mask, radius in image pixels (`[` `]`); what you paint stays through later clicks. Wheel zooms, "
        "space+drag or the middle button pans, `f` fits. `Ctrl+Z` undoes (Detect, Remove image and a class deleted "
        "with its objects too), `Ctrl+Shift+Z` or `Ctrl+Y` redoes, also after a reload. Every change is saved as you "
        "make it.")

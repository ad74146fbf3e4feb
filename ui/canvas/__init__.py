"""The labeling canvas: one `gr.HTML` that shows an image with its boxes, masks and SAM clicks, and sends typed
edits. Our own JS (canvas.js and the parts in PARTS, joined into one js_on_load body) and CSS (canvas.css), shipped
next to this file and read at import; no build step. The pointer tools are a table (tools.js): one entry per tool.

The server's value is the truth: the canvas never decides what is stored. It sends an edit, the Python listener
applies it (one project transaction) and answers with the new value, and the canvas redraws from that value. While
an edit is in flight the canvas draws its local preview on top of the last value.

Wiring (the listener gets the payload as `evt._data` and returns the new value)::

    canvas = make_canvas(elem_id="canvas", height=640)
    canvas.edit(on_edit, [canvas], [canvas], show_progress="hidden", trigger_mode="multiple")

    def on_edit(value, evt: gr.EventData):
        return apply(evt._data)  # -> the new value (below)

A listener that does not need the canvas' current value can leave it out: `canvas.edit(fn, None, [canvas], ...)`
with `fn(evt: gr.EventData)`; the value then does not travel with every edit (bench/bench_canvas.py: about 40 ms
less per edit on a 2-core machine). `trigger_mode="multiple"` keeps every edit (the default "once" drops edits sent
in quick succession) and `show_progress="hidden"` keeps the canvas from dimming during each edit. Never output to
the canvas from its `.change`: `.change` also fires on Python-side updates, so that would loop. Put the image and
overlay files in gradio's cache folder (`gradio.utils.get_upload_folder()`) or a static path: any other path is
hashed (sha256 of the whole file) and copied into the cache on every reply.

The value (Python -> canvas), a JSON dict, or None for "no image"::

    {"image_id": int,
     "revision": int,              # increases on every server-side change, also across images (a per-session
                                   # counter): gradio may deliver the replies to quick edits out of order, and
                                   # the canvas ignores a value whose revision is lower than the one it shows
     "image": {"path": str, "meta": {"_type": "gradio.FileData"}},   # gradio's post-processing fills "url"
     "width": int, "height": int,  # upright image size in px (EXIF applied server-side; the served file is upright;
                                   # it may be a downscaled copy: it is stretched to width x height)
     "objects": [{"id": int, "rev": str,                             # rev: the object's revision as stored
                  "class_name": str, "phrase": bool,                 # phrase objects are drawn grey, dashed
                  "box": [x0, y0, x1, y1],                           # floats, image px, x0 < x1, y0 < y1
                  "score": float | None, "source": "model" | "manual",
                  "color": [r, g, b], "has_mask": bool,
                  "clicks": [[x, y, positive], ...]}],               # SAM clicks, image px; drawn for the selection
     "overlay": FileData dict | None,   # masks, same size as the image: pixel value k (1-based) = objects[k - 1]'s
                                        # mask, 0 = none; palette entry / RGB of k = (k & 255, (k >> 8) & 255, 0)
                                        # (`mask_index_to_overlay` writes it). Give each revision its own file name.
     "classes": [{"name": str, "color": [r, g, b]}],   # in order; keys 1-9 pick classes[0..8]
     "selected": int | None,       # the object to select after this update (e.g. the one just created);
                                   # None keeps the current selection where it still exists
     "can_undo": bool, "can_redo": bool,                # enable the Undo / Redo buttons
     "seq": int | None,            # the last edit seq the server applied (an echo of payload["seq"])
     "message": str | None}        # an error or a note, shown in the canvas' status line

The edits (canvas -> Python), `trigger('edit', payload)`. Every payload has "kind", "image_id" (of the value the
edit was made on: refuse an edit for another image), "seq" (a client counter, increasing; it starts above the
last seq the server echoed), "prev" (the seq of the edit sent before it, 0 for the first: each is its own
request and may arrive first, so the server applies a window's edits in this order, ui/edit_order.py), "window"
(an id the page draws at random when it loads), "base" (the revision of the last value) and "seen" ([[id, rev],
...]: the objects the edit touches as that value showed them; for undo / redo every object of it: the server
refuses an edit made on a view that another window has changed since, ui/window_state.py). All coordinates are
floats in upright image px, at any zoom and device pixel ratio::

    {"kind": "add", "box": [x0, y0, x1, y1], "class_name": str}    # box tool on empty space (Shift: always a new
                                                                   # box); clamped to the image; class "" = none
    {"kind": "move", "object_id": int, "dx": float, "dy": float}   # drag a box's inside; the box stops at the
                                                                   # image's edge (its size kept; the server too)
    {"kind": "resize", "object_id": int, "box": [x0, y0, x1, y1]}  # drag one of the 8 handles; x0 < x1, y0 < y1
    {"kind": "delete", "object_ids": [int, ...]}                   # Delete / Backspace; "Delete hidden": every
                                                                   # model box with score < the threshold slider
    {"kind": "relabel", "object_ids": [int, ...], "class_name": str}   # class picker or keys 1-9 with a selection
    {"kind": "click", "object_id": int | None, "x": float, "y": float, "positive": bool, "class_name": str}
        # SAM tool: refines the selected object, or None: create one (answer with "selected" = the new object so
        # that the next clicks refine it; the canvas holds clicks made before that answer and sends them then).
        # Alt-click, right-click or the +/- toggle: negative. Esc deselects, which ends the chain.
    {"kind": "stroke", "object_id": int | None, "points": [[x, y], ...], "radius": float, "erase": bool,
     "class_name": str}
        # brush (erase False) / eraser (True) on the selected object, or None: the brush creates an object (select
        # it in the answer); the eraser with no object is the server's choice. radius in image px; points sampled
        # from every pointer move (coalesced events included)
    {"kind": "undo"}, {"kind": "redo"}                               # Ctrl+Z; Ctrl+Shift+Z or Ctrl+Y; the buttons
        # (the keys send even when can_undo / can_redo is false: the flags lag behind edits in flight; ignore
        # an undo / redo there is nothing for)

Edits in flight are drawn on top of the last value (a new box dashed, a moved box at its new place, a stroke as a
translucent line) until a value whose "seq" is at least theirs arrives; a stroke until that value's overlay has
loaded. The same overlay FileData (same url) may come again while the masks and the object order are unchanged:
it is not fetched again, and its pixel k then means objects[k - 1] of the new value.

Selecting (box tool): a click takes the selected box if it lies under the pointer, else the smallest box there;
a click (no drag) where the last one was selects the next larger box under it (round again after the largest).

Keys (whenever the canvas is shown and the focus is not in a text field; Space and Enter only on the canvas
itself, so that a focused button keeps them): v / b select-and-box tool, k SAM clicks, u brush, e eraser, [ ] brush radius,
f fit, 1-9 class, Delete / Backspace delete, Ctrl+Z / Ctrl+Shift+Z / Ctrl+Y undo / redo, Esc deselect (or cancel a
drag), space+drag or middle-drag pan, wheel zoom (a factor of 2 per 200 px of wheel delta, around the cursor).

For tests and benchmarks the root `.gc-root` carries data attributes: `data-revision` (of the value last drawn) and
`data-painted-at` (performance.now() in the animation frame that first drew it), `data-overlay-revision` /
`data-overlay-painted-at`, `data-sent-at` (the last edit) and `data-received-at` (the last value), `data-visible-boxes`,
`data-hidden-boxes`, `data-selected`, `data-image-id`, `data-image-ready`, `data-tool`, `data-pending`, `data-stale`
(how many out-of-order values were ignored).
"""

from __future__ import annotations

from pathlib import Path

import gradio as gr

_HERE = Path(__file__).parent
# The parts of the js_on_load body, joined in this order: canvas.js (the elements and the shared state) first, the
# helpers, the tools (tool_*.js, then their table in tools.js), the pointer and key handlers, the mount last.
PARTS = ("canvas.js", "geometry.js", "objects.js", "edits.js", "value.js", "draw.js", "shapes.js",
         "tool_box.js", "tool_click.js", "tool_stroke.js", "tool_pan.js", "tools.js",
         "pointer.js", "keys.js", "toolbar.js")
CANVAS_JS = "\n".join((_HERE / name).read_text(encoding="utf-8") for name in PARTS)
CANVAS_CSS = (_HERE / "canvas.css").read_text(encoding="utf-8")

HELP = ("wheel: zoom, drag with middle button or space+drag: pan, click again: the next box under the pointer, "
        "1-9: class, Del: delete, X / Shift+X: find similar here / in all images (SAM 3; Alt-click a box: not this), "
        "Ctrl+Z / Ctrl+Shift+Z: undo / redo, "
        "Esc: deselect")

# Static: gradio diffs a changed template into the DOM, which would reset the canvas. The JS draws the value.
TEMPLATE = """<div class="gc-root" tabindex="0" style="--gc-height: __HEIGHT__px">
<div class="gc-toolbar" role="toolbar" aria-label="Canvas tools">
<span class="gc-group">
<button type="button" class="gc-tool" data-tool="box"
 title="Select, move, resize; drag on empty space: new box (V, B)">Box</button>
<button type="button" class="gc-tool" data-tool="click" title="SAM clicks (K). Alt-click or right-click: negative">Click</button>
<button type="button" class="gc-tool" data-tool="brush" title="Brush (U)">Brush</button>
<button type="button" class="gc-tool" data-tool="eraser" title="Eraser (E)">Eraser</button>
<button type="button" class="gc-sign" aria-pressed="false" title="SAM click sign: + adds, − removes (for touch)">+</button>
</span>
<label title="Brush radius in image pixels ([ and ])">radius
 <input class="gc-radius" type="number" min="1" max="500" step="1" value="20"></label>
<label title="Class for new boxes (1-9); with a selection: relabel">class <select class="gc-class"></select></label>
<label>opacity <input class="gc-opacity" type="range" min="0" max="1" step="0.05" value="0.45"></label>
<label><input class="gc-show" type="checkbox" data-show="boxes" checked> boxes</label>
<label><input class="gc-show" type="checkbox" data-show="masks" checked> masks</label>
<label><input class="gc-show" type="checkbox" data-show="labels" checked> labels</label>
<label><input class="gc-show" type="checkbox" data-show="scores" checked> scores</label>
<label title="Hide model boxes scoring below this">min score
 <input class="gc-threshold" type="range" min="0" max="1" step="0.01" value="0">
 <span class="gc-threshold-value">0.00</span></label>
<button type="button" class="gc-delete-hidden" title="Delete the model boxes hidden by the score threshold">Delete hidden</button>
<button type="button" class="gc-similar"
 title="Find similar (X): SAM 3 adds objects like the selected boxes; Alt-click marks what it is not">Find
 similar</button>
<button type="button" class="gc-similar-all"
 title="Find similar in the other images (Shift+X): a job of the server; the job line shows it, Cancel stops it">in all
 images</button>
<span class="gc-group">
<button type="button" class="gc-undo" disabled title="Undo (Ctrl+Z)">Undo</button>
<button type="button" class="gc-redo" disabled title="Redo (Ctrl+Shift+Z)">Redo</button>
<button type="button" class="gc-fit" title="Fit the image (F)">Fit</button>
</span>
</div>
<div class="gc-stage"><canvas class="gc-canvas"></canvas><div class="gc-empty">No image</div></div>
<div class="gc-status" aria-live="polite"><span class="gc-message"></span><span class="gc-pending"></span>
<span class="gc-help">__HELP__</span></div>
</div>"""


def make_canvas(elem_id: str = "canvas", height: int = 640) -> gr.HTML:
    """The canvas component, `height` CSS px tall (plus its toolbar); its value is the canvas state above, None
    at first. Listen with `.edit(...)` as the module docstring shows."""
    html = TEMPLATE.replace("__HEIGHT__", str(int(height))).replace("__HELP__", HELP)
    return gr.HTML(None, html_template=html, css_template=CANVAS_CSS, js_on_load=CANVAS_JS, apply_default_css=False,
                   elem_id=elem_id, container=False, padding=False)


def mask_index_to_overlay(index):
    """(H, W) integer array, 0 = no object, k = objects[k - 1] -> the overlay image the canvas decodes (PIL).

    Up to 255 objects: a palette PNG whose entry k has RGB (k, 0, 0); more: an RGB image with
    (k & 255, (k >> 8) & 255, 0). Save it as PNG (lossless), under a new name per revision."""
    import numpy as np
    from PIL import Image

    index = np.asarray(index)
    if index.ndim != 2 or index.min(initial=0) < 0 or index.max(initial=0) > 65535:
        raise ValueError(f"need a (H, W) index array with values in 0..65535, got shape {index.shape}")
    if index.max(initial=0) <= 255:
        im = Image.frombytes("P", (index.shape[1], index.shape[0]), index.astype(np.uint8).tobytes())
        k = np.arange(256, dtype=np.uint8)
        im.putpalette(np.stack([k, np.zeros_like(k), np.zeros_like(k)], axis=1).ravel().tolist())
        return im
    rgb = np.zeros((*index.shape, 3), np.uint8)
    rgb[..., 0] = index & 255
    rgb[..., 1] = index >> 8
    return Image.fromarray(rgb)


__all__ = ["CANVAS_CSS", "CANVAS_JS", "HELP", "PARTS", "make_canvas", "mask_index_to_overlay"]

"""SAM 3 (Meta, 2025) as a second detector family: text or exemplar boxes -> every instance, with masks.

`Sam3Detector` (detector.py) gives the `Detector` API; `gdino.Detector.from_pretrained` returns one when the
weights are SAM 3's. loading.py reads them (hub folder or the official `sam3.pt` through keymap.py);
processing.py holds the official processor's steps. The weights are Meta's, under the SAM License (gated on
the Hugging Face Hub): gdino never downloads them unless asked by name.
"""

BOX_THRESHOLD = 0.5  # SAM 3's own: a query is kept when sigmoid(class) x sigmoid(presence) is above it

"""Find similar: what a search for more like some exemplar boxes adds to an image, for the canvas (one image) and
for a run over the project's other images (the exemplars' prompt carried to each).

The rule: a found object is added unless its box overlaps a box already on the image, the exemplars included, at
IoU >= SIMILAR_IOU (0.5, the duplicate rule of the detectors' NMS). Found objects come best score first; each one
kept also blocks the later ones it overlaps as much, so one search never adds two boxes for one thing, and running
the same search again adds nothing new. Found objects are stored as model objects (score, mask) of the exemplars'
class, one undo step per image (`Project.add_model_objects`: an unlabeled image becomes "auto"; a box a person
deleted, changed or drew of that class is never added again). The canvas' search is a person's edit; a run
over the project is not (like a model run: it ends no redo, and it skips an image a person marks reviewed or
skipped while it runs).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from ..masks import mask_to_rle
from ..store import ObjectState, ProjectError
from ..store.history import iou as box_iou

SIMILAR_IOU = 0.5
SEARCHED_STATUSES = ("unlabeled", "auto")  # a run over the project leaves the images a person decided on alone


def new_ones(found: np.ndarray, scores: np.ndarray, existing: Sequence[Sequence[float]],
             iou: float = SIMILAR_IOU) -> list[int]:
    """Indices of `found` (K, 4) xyxy to add, best score first: those overlapping no existing box (nor a found
    box kept before them) at IoU >= iou."""
    kept = [tuple(map(float, b)) for b in existing]
    keep = []
    for k in np.argsort(-np.asarray(scores), kind="stable"):
        box = tuple(map(float, found[k]))
        if any(box_iou(box, other) >= iou for other in kept):
            continue
        keep.append(int(k))
        kept.append(box)
    return keep


def exemplars(objects: Mapping[int, object], positive_ids: Sequence[int], negative_ids: Sequence[int] = ()
              ) -> tuple[str, list, list[bool]]:
    """The exemplar objects of one image (id -> record) -> (their class, their boxes positives first, True / False
    per box). Raises ProjectError when one is gone or the positive ones are not of one class."""
    ids = [*positive_ids, *negative_ids]
    if not positive_ids or any(i not in objects for i in ids):
        raise ProjectError("the example boxes are gone (deleted or changed meanwhile); select them again")
    names = {objects[i].class_name for i in positive_ids}
    if len(names) != 1:
        raise ProjectError("the examples must be boxes of one class: select boxes of one class")
    return names.pop(), [objects[i].box for i in ids], [True] * len(positive_ids) + [False] * len(negative_ids)


def add_found(project, image_id: int, found, class_name: str, *, expect: Sequence = (), person: bool = True,
              if_status: Sequence[str] | None = None, after: Callable | None = None) -> tuple[int, int] | None:
    """Store what a search found on one image (supervision.Detections with masks), by the rule above, in one
    transaction and one undo step (`Project.add_model_objects`: a box a person deleted, changed or drew of that
    class is never added again) -> (added, left out), or None when `if_status` kept the image as it was.
    expect: objects that must still be as read (the exemplars). person: the canvas' x (a person's edit) or a
    background run (not one)."""
    states = [ObjectState(class_name, tuple(float(v) for v in found.xyxy[k]), score=float(found.confidence[k]),
                          source="model", mask=None if found.mask is None else mask_to_rle(found.mask[k]))
              for k in range(len(found))]

    def choose(existing, candidates) -> list[int]:
        boxes = np.array([s.box for s in candidates], dtype=np.float64).reshape(-1, 4)
        return new_ones(boxes, np.array([s.score for s in candidates]), [o.box for o in existing])

    added = project.add_model_objects(image_id, states, choose, if_status=if_status, expect=expect, person=person,
                                      after=after)
    return None if added is None else (len(added), len(found) - len(added))


@dataclass
class SimilarSummary:
    searched: list[int] = field(default_factory=list)
    objects: int = 0
    left_out: int = 0
    kept: list[int] = field(default_factory=list)  # marked reviewed or skipped meanwhile: left as they were
    failed: dict[int, str] = field(default_factory=dict)  # image id -> why (unreadable, removed meanwhile)
    cancelled: bool = False


def similar_targets(project, source_id: int) -> list[int]:
    """The images a run over the project searches: every other image but those a person marked reviewed or
    skipped, by name."""
    return [r.id for r in project.images(order="name") if r.id != source_id and r.status in SEARCHED_STATUSES]


def similar_in_project(project, detector, source_id: int, positive_ids: Sequence[int], negative_ids: Sequence[int],
                       targets: Sequence[int], read: Callable[[int], object], *, lock=None,
                       should_stop: Callable[[], bool] | None = None,
                       progress: Callable[[SimilarSummary], None] | None = None) -> SimilarSummary:
    """Search `targets` for more like the exemplars (objects of `source_id`): their prompt is made once on the
    source image (`detector.exemplar_prompt`: SAM 3's exemplar tokens) and carried to each target
    (`detector.detect_like`); what is found is added by the rule above, one edit per image. read: image id ->
    pixels; lock: held around each model call (the app's model lock). Raises ValueError when the exemplars are
    not boxes of one class or are gone."""
    import contextlib

    from ..processing import ImageError

    name, boxes, labels = exemplars({o.id: o for o in project.objects(source_id)}, positive_ids, negative_ids)
    hold = lock if lock is not None else contextlib.nullcontext()
    with hold:
        prompt = detector.exemplar_prompt(read(source_id), boxes, labels)
    summary = SimilarSummary()
    for image_id in targets:
        if should_stop is not None and should_stop():
            summary.cancelled = True
            break
        try:
            if project.image(image_id).status not in SEARCHED_STATUSES:  # decided meanwhile: no model time on it
                summary.kept.append(image_id)
                continue
            pixels = read(image_id)
            with hold:
                found = detector.detect_like(pixels, prompt, class_name=name)
            stored = add_found(project, image_id, found, name, person=False, if_status=SEARCHED_STATUSES)
        except (OSError, ImageError) as err:
            summary.failed[image_id] = str(err)
            continue
        except ProjectError as err:
            if project.has_image(image_id):
                raise
            summary.failed[image_id] = str(err)  # removed while it was searched
            continue
        if stored is None:  # a person marked it reviewed or skipped while the run went: their decision stays
            summary.kept.append(image_id)
        else:
            summary.searched.append(image_id)
            summary.objects += stored[0]
            summary.left_out += stored[1]
        if progress is not None:
            progress(summary)
    return summary

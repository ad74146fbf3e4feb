"""Run find similar across a project in its own process, as the app's job does (gdino.labeling.similar), for the
kill tests: python similar_run.py PROJECT MODEL SOURCE_ID POSITIVE_ID NEGATIVE_ID.

The tiny random SAM 3 finds one object a picture (its boxes overlap, and the overlap rule keeps the best); for a
kill to be able to land between the objects of one picture, each find comes with SPARE more: small boxes (and
their masks) on a grid of the picture, scored below it. The write path under test is the real one."""

import sys

SPARE = 3


def several(detector):
    """The detector, its detect_like giving each picture SPARE more objects than it found (none overlapping)."""
    import numpy as np
    import supervision as sv

    original = detector.detect_like

    def detect_like(pixels, prompt, **kwargs):
        found = original(pixels, prompt, **kwargs)
        if len(found) == 0:
            return found
        w, h = pixels.size if hasattr(pixels, "size") and not isinstance(pixels, np.ndarray) else pixels.shape[1::-1]
        boxes = np.array([[w * (0.05 + 0.3 * k), h * 0.8, w * (0.05 + 0.3 * k) + w * 0.1, h * 0.95]
                          for k in range(SPARE)], dtype=np.float32)
        masks = np.zeros((SPARE, h, w), dtype=bool)
        for k, (x0, y0, x1, y1) in enumerate(boxes.astype(int)):
            masks[k, y0:y1, x0:x1] = True
        names = np.array([found.data["class_name"][0]] * SPARE, dtype=found.data["class_name"].dtype)
        extra = sv.Detections(xyxy=boxes, confidence=np.full(SPARE, 0.01, np.float32), mask=masks,
                              class_id=np.full(SPARE, found.class_id[0]), data={"class_name": names},
                              metadata=dict(found.metadata))
        return sv.Detections.merge([found, extra])

    detector.detect_like = detect_like
    return detector


def main(project_dir: str, model: str, source: str, positive: str, negative: str) -> None:
    import gdino
    from gdino.labeling.similar import similar_in_project, similar_targets
    from gdino.sources import read_image
    from gdino.store import Project

    detector = several(gdino.Detector.from_pretrained(model, device="cpu"))
    with Project.open(project_dir) as project:
        source_id = int(source)
        similar_in_project(project, detector, source_id, [int(positive)], [int(negative)],
                           similar_targets(project, source_id), lambda i: read_image(project.image(i).location))


if __name__ == "__main__":
    main(*sys.argv[1:])

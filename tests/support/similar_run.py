"""Run find similar across a project in its own process, as the app's job does (gdino.labeling.similar), for the
kill tests: python similar_run.py PROJECT MODEL SOURCE_ID POSITIVE_ID NEGATIVE_ID."""

import sys


def main(project_dir: str, model: str, source: str, positive: str, negative: str) -> None:
    import gdino
    from gdino.labeling.similar import similar_in_project, similar_targets
    from gdino.sources import read_image
    from gdino.store import Project

    detector = gdino.Detector.from_pretrained(model, device="cpu")
    with Project.open(project_dir) as project:
        source_id = int(source)
        similar_in_project(project, detector, source_id, [int(positive)], [int(negative)],
                           similar_targets(project, source_id), lambda i: read_image(project.image(i).location))


if __name__ == "__main__":
    main(*sys.argv[1:])

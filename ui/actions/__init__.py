"""Every action of the page as a plain function of the App (ui/app.py): plain values in, plain values out, the
project store as the only memory. One module per area of the page; the layout (ui/layout.py) wires them to
components, the tests call them directly. Nothing here imports the layout, and no module of this package
imports the package itself (only its siblings, in one direction: canvas -> review, labeling -> models ...).

Messages are plain text: the layout shows them literally (ui/text.py), whatever names they quote. The lines
made for a Markdown component (`image_line`, `review_counter`) escape every name they hold.

    uploads.py    images into the project: uploads, the example photos, server folders
    review.py     browsing and review: the filtered list, stepping, marking, removing
    classes.py    the class manager and free text's found phrases
    models.py     which detector and which SAM the project uses (the server's, or its own fine-tuned ones)
    labeling.py   the prompt, Detect, the auto-label job and the job's status
    canvas.py     the canvas' value and its edits; SAM for its clicks, and the next image's prefetch
    export.py     the export zip
    training.py   fine-tuning on the reviewed images
"""

from gdino.store import ProjectError

from ..app import USER_ERRORS, App, make_app, page_words
from .canvas import NotShownError, canvas_edit, canvas_state, embed_image, prefetch_next, refine_mask, view_image
from .classes import class_counts, delete_class, map_phrase, phrase_choices, rename_class
from .export import export
from .labeling import (
    cancel_auto_label,
    detect_image,
    job_status,
    load_prompt,
    save_prompt,
    settings_from_inputs,
    start_auto_label,
)
from .models import (
    choose_model,
    choose_sam,
    model_choices,
    offered_models,
    project_model,
    project_sam,
    project_segmenter,
    sam_choices,
    status_line,
    trained_models,
)
from .review import current_image, image_line, mark_and_step, remove_image, review_counter, rows, set_status, step
from .training import start_training, use_trained_model
from .uploads import add_example, add_server_folder, add_uploads, open_server_project

__all__ = [
    "USER_ERRORS", "App", "NotShownError", "ProjectError", "add_example", "add_server_folder", "add_uploads",
    "cancel_auto_label", "canvas_edit", "canvas_state", "choose_model", "choose_sam", "class_counts", "current_image",
    "delete_class", "detect_image", "embed_image", "export", "image_line", "job_status", "load_prompt", "make_app",
    "map_phrase", "mark_and_step",
    "model_choices", "offered_models", "open_server_project", "page_words", "phrase_choices", "prefetch_next",
    "project_model", "project_sam", "project_segmenter", "refine_mask", "remove_image", "rename_class",
    "review_counter", "rows", "sam_choices", "save_prompt", "set_status", "settings_from_inputs",
    "start_auto_label", "start_training", "status_line", "step", "trained_models", "use_trained_model", "view_image",
]

"""The project store: images, classes, objects, review state and their history in one SQLite file per project.

`Project` is the one public facade; the modules here are its parts, one job each (see project.py)."""

from ..checks import SOURCES, STATUSES
from .connection import DB_NAME
from .errors import ProjectError, StoreError
from .files import IMAGES_DIR, TRASH_DIR, decoded_size
from .project import Project
from .records import ORDERS, Guard, ImageRecord, NewImage, ObjectRecord, ObjectState

__all__ = ["DB_NAME", "IMAGES_DIR", "ORDERS", "SOURCES", "STATUSES", "TRASH_DIR", "Guard", "ImageRecord", "NewImage",
           "ObjectRecord", "ObjectState", "Project", "ProjectError", "StoreError", "decoded_size"]

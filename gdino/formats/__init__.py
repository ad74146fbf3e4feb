"""Dataset formats: COCO, YOLO (detect and segment), Pascal VOC. Pure record builders per format,
thin writers, and the export / import of a whole project."""

from .dataset import Dataset, LabeledImage, LabeledObject, split_images
from .export import FORMATS, dataset_from_project, export_dataset, export_zip

__all__ = ["FORMATS", "Dataset", "LabeledImage", "LabeledObject", "dataset_from_project", "export_dataset",
           "export_zip", "split_images"]

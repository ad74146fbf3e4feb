"""Pascal VOC XML: records (pure) and files (thin). Boxes use VOC's 1-based inclusive pixel indices."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from .dataset import LabeledImage


def voc_xml(image: LabeledImage, classes: tuple[str, ...], folder: str = "JPEGImages") -> str:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = folder
    ET.SubElement(root, "filename").text = _xml_text(image.file_name)
    size = ET.SubElement(root, "size")
    for tag, value in (("width", image.width), ("height", image.height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for obj in image.objects:
        x0, y0, x1, y1 = obj.box
        node = ET.SubElement(root, "object")
        ET.SubElement(node, "name").text = _xml_text(classes[obj.class_id])
        ET.SubElement(node, "pose").text = "Unspecified"
        ET.SubElement(node, "truncated").text = "0"
        ET.SubElement(node, "difficult").text = "0"
        box = ET.SubElement(node, "bndbox")
        # pixel edges (0 .. w) -> first and last covered pixel, counted from 1
        coords = (round(x0) + 1, round(y0) + 1, max(round(x1), round(x0) + 1), max(round(y1), round(y0) + 1))
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), coords, strict=True):
            ET.SubElement(box, tag).text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode")


_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")  # what XML 1.0 cannot hold at all


def _xml_text(text: str) -> str:
    """ElementTree escapes markup (&, <, >) but writes any character; one XML cannot hold (a control
    character, from a project older than the rule for names) becomes U+FFFD, so the file stays well-formed."""
    return _NOT_XML.sub("\ufffd", text)


def write_voc(xml: str, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(xml)
    return path

"""Detection datasets: Pascal VOC folders (the official format), COCO JSON, and seeded infinite batches.

The official code registers every task (Cityscapes, Foggy Cityscapes, BDD100K, KITTI, Sim10K) as a Pascal
VOC folder: ``ImageSets/Main/<split>.txt`` (one id per line), ``Annotations/<id>.xml`` and
``JPEGImages/<id>.jpg``. Its loader keeps every object, ignores ``difficult`` and subtracts 1 from xmin and
ymin (VOC coordinates are 1-based); :func:`parse_voc_xml` does the same, so :func:`write_voc_xml` adds 1 and a
written folder reads back exactly. Unlike the official loader, the reader here accepts ``.png`` images and
XMLs without ``pose``/``truncated``/``difficult`` (the converted Cityscapes folders have neither: issues #6
and #12 of the official repository), float coordinates, and clips boxes to the image.

Items are ``(image, target)``: an RGB float tensor (3, H, W) in [0, 1] and ``{"boxes": (n, 4) float32 xyxy,
"labels": (n,) int64 in 1..K, "difficult": (n,) bool, "image_id": str}``. Every annotation is parsed when
the dataset is built, so a bad file stops a run before training, never in the middle.
"""

from __future__ import annotations

import json
import math
import os
import xml.etree.ElementTree as ET
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from shared.data import open_image
from shared.errors import UserError, require_path

VOC_IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png")
_COORDINATES = ("xmin", "ymin", "xmax", "ymax")


@dataclass
class VocRecord:
    """One parsed annotation file; ``boxes`` are 0-based pixel xyxy, ``labels`` 1..K."""

    filename: str
    width: int
    height: int
    boxes: np.ndarray
    labels: np.ndarray
    difficult: np.ndarray
    skipped: list[str] = field(default_factory=list)


def _text(element: ET.Element | None, tag: str) -> str | None:
    child = element.find(tag) if element is not None else None
    if child is None or child.text is None or not child.text.strip():
        return None
    return child.text.strip()


def _number(path: Path, tag: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise UserError(f"{path}: <{tag}> is {text!r}, not a number: fix the annotation file") from None
    if not math.isfinite(value):
        raise UserError(f"{path}: <{tag}> is {text!r}, not a finite number: fix the annotation file")
    return value


def _image_size(path: Path, image_path: str | os.PathLike | None) -> tuple[int, int]:
    if image_path is None:
        raise UserError(f"{path} has no <size><width>/<height>: add them or give the image to read its size from")
    return open_image(image_path).size


def _clip_boxes(boxes: np.ndarray, width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Boxes clipped to the image and the mask of those at least one pixel wide and high."""
    boxes = boxes.copy()
    boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
    boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
    keep = (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
    return boxes, keep


def parse_voc_xml(
    path: str | os.PathLike,
    class_names: Sequence[str],
    *,
    strict_classes: bool = True,
    image_path: str | os.PathLike | None = None,
) -> VocRecord:
    """Read one Pascal VOC annotation file as the official loader does, but tolerant of the converted folders.

    xmin and ymin lose 1 (the official loader's conversion of VOC's 1-based coordinates); coordinates may be
    floats. Missing ``pose``/``truncated``/``difficult`` default to "Unspecified"/0/0 (only ``difficult`` is
    kept). A missing or zero ``<size>`` is read from ``image_path``. Boxes are clipped to the image; boxes
    under one pixel wide or high after clipping are skipped, as are (with ``strict_classes=False``) objects of
    classes outside ``class_names``, each with a reason in ``skipped``. A missing ``<name>``, ``<bndbox>`` or
    coordinate, or (strict) an unknown class name, is a UserError naming the file.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise UserError(f"{path} is not valid XML ({exc}): fix or regenerate the annotation file") from None
    except OSError as exc:
        raise UserError(f"cannot read annotation {path} ({exc.strerror or exc})") from None
    size = root.find("size")
    width_text, height_text = _text(size, "width"), _text(size, "height")
    width = int(_number(path, "width", width_text)) if width_text else 0
    height = int(_number(path, "height", height_text)) if height_text else 0
    if width <= 0 or height <= 0:
        width, height = _image_size(path, image_path)
    index = {name: i + 1 for i, name in enumerate(class_names)}
    coordinates, labels, difficult, skipped = [], [], [], []
    for number, obj in enumerate(root.iter("object"), start=1):
        name = _text(obj, "name")
        if name is None:
            raise UserError(f"{path}: object {number} has no <name>: fix the annotation file")
        if name not in index:
            if strict_classes:
                raise UserError(
                    f"{path}: object {number} has class {name!r}, not one of {list(class_names)}: "
                    "pass the dataset's class list (or strict_classes=False to skip other classes)"
                )
            skipped.append(f"{path.name}: object {number} of unknown class {name!r}")
            continue
        bndbox = obj.find("bndbox")
        if bndbox is None:
            raise UserError(f"{path}: object {number} ({name}) has no <bndbox>: fix the annotation file")
        values = []
        for tag in _COORDINATES:
            text = _text(bndbox, tag)
            if text is None:
                raise UserError(f"{path}: object {number} ({name}) has no <bndbox><{tag}>: fix the annotation file")
            values.append(_number(path, tag, text))
        flag = _text(obj, "difficult")
        coordinates.append(values)
        labels.append(index[name])
        difficult.append(flag is not None and _number(path, "difficult", flag) != 0)
    boxes = np.asarray(coordinates, dtype=np.float64).reshape(-1, 4)
    boxes[:, :2] -= 1.0
    boxes, keep = _clip_boxes(boxes, width, height)
    skipped += [f"{path.name}: degenerate box {np.round(b, 2).tolist()} after clipping" for b in boxes[~keep]]
    return VocRecord(
        filename=_text(root, "filename") or path.stem,
        width=width,
        height=height,
        boxes=boxes[keep].astype(np.float32),
        labels=np.asarray(labels, dtype=np.int64)[keep],
        difficult=np.asarray(difficult, dtype=np.bool_)[keep],
        skipped=skipped,
    )


def _coordinate_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def write_voc_xml(
    path: str | os.PathLike,
    filename: str,
    width: int,
    height: int,
    boxes: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    class_names: Sequence[str],
    difficult: np.ndarray | torch.Tensor | None = None,
) -> None:
    """Write a complete Pascal VOC annotation (folder, filename, size, segmented, pose, truncated, difficult).

    ``boxes`` are 0-based xyxy and ``labels`` 1..K; xmin and ymin are written 1-based (plus 1), the inverse
    of :func:`parse_voc_xml`. The devkit evaluator needs every tag written here (issue #12 of the official
    repository is its crash on a missing ``pose``).
    """
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    flags = np.zeros(len(labels), dtype=bool) if difficult is None else np.asarray(difficult, dtype=bool)
    path = Path(path)
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = filename
    size = ET.SubElement(root, "size")
    for tag, value in (("width", width), ("height", height), ("depth", 3)):
        ET.SubElement(size, tag).text = str(int(value))
    ET.SubElement(root, "segmented").text = "0"
    written = boxes.copy()
    written[:, :2] += 1.0
    for box, label, flag in zip(written, labels, flags, strict=True):
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = class_names[int(label) - 1]
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = str(int(flag))
        bndbox = ET.SubElement(obj, "bndbox")
        for tag, value in zip(_COORDINATES, box, strict=True):
            ET.SubElement(bndbox, tag).text = _coordinate_text(value)
    ET.indent(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    ET.ElementTree(root).write(path, encoding="utf-8", xml_declaration=False)


def _to_tensor(image) -> torch.Tensor:
    array = np.array(image, dtype=np.uint8)
    return torch.from_numpy(array).permute(2, 0, 1).float().div_(255.0)


def _target(boxes, labels, difficult, image_id: str) -> dict[str, Any]:
    return {
        "boxes": torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4),
        "labels": torch.as_tensor(labels, dtype=torch.int64),
        "difficult": torch.as_tensor(difficult, dtype=torch.bool),
        "image_id": image_id,
    }


class DetectionDataset(Dataset):
    """Shared item reading and summary of the VOC and COCO datasets (``paths``, ``records``, ``ids``)."""

    class_names: tuple[str, ...]
    ids: list[str]
    paths: list[Path]
    records: list[VocRecord]

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, Any]]:
        record, path = self.records[index], self.paths[index]
        image = open_image(path)
        if image.size != (record.width, record.height):
            raise UserError(
                f"{path} is {image.size[0]}x{image.size[1]} but its annotation says "
                f"{record.width}x{record.height}: fix the <size> (or the image) so the boxes match"
            )
        return _to_tensor(image), _target(record.boxes, record.labels, record.difficult, self.ids[index])

    def check_image_sizes(self) -> None:
        """Refuse, before any training, images whose size differs from their annotation (header reads only)."""
        wrong = []
        for path, record in zip(self.paths, self.records, strict=True):
            try:
                with Image.open(path) as image:
                    size = image.size
            except OSError as exc:
                raise UserError(f"cannot read image {path} ({exc}): replace or remove it") from None
            if size != (record.width, record.height):
                wrong.append(f"{path.name} is {size[0]}x{size[1]}, annotated {record.width}x{record.height}")
        if wrong:
            raise UserError(
                f"{len(wrong)} image(s) differ in size from their annotation ({'; '.join(wrong[:3])}"
                f"{'; ...' if len(wrong) > 3 else ''}): fix the <size> (or the images) so the boxes match"
            )

    def summary(self) -> dict[str, Any]:
        """Images, objects, skipped boxes and objects per class."""
        labels = np.concatenate([r.labels for r in self.records]) if self.records else np.zeros(0, np.int64)
        counts = np.bincount(labels, minlength=len(self.class_names) + 1)[1:]
        return {
            "images": len(self.records),
            "objects": int(labels.size),
            "skipped_boxes": sum(len(r.skipped) for r in self.records),
            "per_class": {name: int(c) for name, c in zip(self.class_names, counts, strict=True)},
        }


class VOCDetection(DetectionDataset):
    """A Pascal VOC folder split: ``root/ImageSets/Main/<split>.txt``, ``Annotations``, ``JPEGImages``.

    ``image_ext`` (".jpg", ".png", ...) is found per image among .jpg/.jpeg/.png when not given (the
    converted Cityscapes folders keep ``.png``; the official loader hard-codes ``.jpg``). All annotations are
    parsed here; the skipped boxes are counted in :meth:`summary`.
    """

    def __init__(
        self,
        root: str | os.PathLike,
        split: str,
        class_names: Sequence[str],
        image_ext: str | None = None,
        strict_classes: bool = True,
    ) -> None:
        root = require_path(root, "VOC folder", kind="dir")
        list_file = root / "ImageSets" / "Main" / f"{split}.txt"
        if not list_file.is_file():
            raise UserError(f"split list {list_file} not found: a VOC folder needs ImageSets/Main/<split>.txt")
        ids = [line.strip() for line in list_file.read_text(encoding="utf-8").splitlines() if line.strip()]
        if not ids:
            raise UserError(f"split list {list_file} is empty: list one image id per line")
        annotations = require_path(root / "Annotations", "VOC annotation folder", kind="dir")
        images = require_path(root / "JPEGImages", "VOC image folder", kind="dir")
        self.class_names = tuple(class_names)
        self.ids = ids
        self.paths = self._image_paths(images, ids, image_ext)
        self.records = []
        for image_id, path in zip(ids, self.paths, strict=True):
            xml = annotations / f"{image_id}.xml"
            if not xml.is_file():
                raise UserError(f"annotation {xml} not found (listed in {list_file}): add it or remove the id")
            self.records.append(parse_voc_xml(xml, self.class_names, strict_classes=strict_classes, image_path=path))
        self.check_image_sizes()

    @staticmethod
    def _image_paths(folder: Path, ids: list[str], image_ext: str | None) -> list[Path]:
        if image_ext is not None and not image_ext.startswith("."):
            image_ext = f".{image_ext}"
        present = set(os.listdir(folder))
        extensions = (image_ext,) if image_ext else VOC_IMAGE_EXTENSIONS
        paths, missing = [], []
        for image_id in ids:
            name = next((image_id + e for e in extensions if image_id + e in present), None)
            if name is None:
                missing.append(image_id)
            paths.append(folder / (name or image_id))
        if missing:
            raise UserError(
                f"{len(missing)} of {len(ids)} images have no file {folder}/<id>{{{','.join(extensions)}}} "
                f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}): add them or set --image-ext"
            )
        return paths


class CocoDetection(DetectionDataset):
    """A COCO-format detection JSON (``images``, ``annotations``, ``categories``) over ``images_root``.

    Categories become labels 1..K in the JSON's category order, or in the order of ``class_names`` (other
    categories are a UserError, or skipped with ``strict_classes=False``). ``bbox`` is xywh in pixels;
    ``iscrowd`` marks the box difficult (ignored by the VOC evaluator). Images without annotations are kept.
    """

    def __init__(
        self,
        annotation_json: str | os.PathLike,
        images_root: str | os.PathLike,
        class_names: Sequence[str] | None = None,
        strict_classes: bool = True,
    ) -> None:
        annotation_json = require_path(annotation_json, "COCO annotation file", kind="file")
        images_root = require_path(images_root, "COCO image folder", kind="dir")
        try:
            data = json.loads(annotation_json.read_text(encoding="utf-8"))
            categories = {int(c["id"]): str(c["name"]) for c in data["categories"]}
            images = [(int(i["id"]), str(i["file_name"]), int(i["width"]), int(i["height"])) for i in data["images"]]
            anns = [
                (int(a["image_id"]), int(a["category_id"]), [float(v) for v in a["bbox"]], bool(a.get("iscrowd", 0)))
                for a in data.get("annotations", [])
            ]
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise UserError(f"{annotation_json} is not JSON ({exc}): point at a COCO annotation file") from None
        except (KeyError, TypeError, ValueError) as exc:
            raise UserError(
                f"{annotation_json} is not a COCO detection file (bad or missing {exc}): it needs images "
                "(id, file_name, width, height), annotations (image_id, category_id, bbox) and categories (id, name)"
            ) from None
        if not images:
            raise UserError(f"{annotation_json} lists no images: point at a non-empty COCO annotation file")
        self.class_names = tuple(class_names) if class_names is not None else tuple(categories.values())
        index = {name: i + 1 for i, name in enumerate(self.class_names)}
        unknown = sorted({categories.get(c, str(c)) for _, c, _, _ in anns} - set(index))
        if unknown and strict_classes:
            raise UserError(
                f"{annotation_json} has categories {unknown} not in {list(self.class_names)}: pass the dataset's "
                "class list (or strict_classes=False to skip other classes)"
            )
        per_image: dict[int, list] = {image_id: [] for image_id, _, _, _ in images}
        for image_id, category, bbox, crowd in anns:
            if image_id not in per_image:
                raise UserError(f"{annotation_json}: an annotation refers to image id {image_id}, which is not listed")
            per_image[image_id].append((index.get(categories.get(category, "")), bbox, crowd))
        self.ids, self.paths, self.records = [], [], []
        for image_id, file_name, width, height in images:
            objects = per_image[image_id]
            known = [o for o in objects if o[0] is not None]
            xywh = np.asarray([o[1] for o in known], dtype=np.float64).reshape(-1, 4)
            boxes, keep = _clip_boxes(np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], axis=1), width, height)
            skipped = [f"{file_name}: object of an unknown category"] * (len(objects) - len(known))
            skipped += [f"{file_name}: degenerate box {np.round(b, 2).tolist()} after clipping" for b in boxes[~keep]]
            self.ids.append(str(image_id))
            self.paths.append(images_root / file_name)
            self.records.append(
                VocRecord(
                    filename=file_name,
                    width=width,
                    height=height,
                    boxes=boxes[keep].astype(np.float32),
                    labels=np.asarray([o[0] for o in known], dtype=np.int64)[keep],
                    difficult=np.asarray([o[2] for o in known], dtype=np.bool_)[keep],
                    skipped=skipped,
                )
            )
        missing = [str(p) for p in self.paths if not p.is_file()]
        if missing:
            raise UserError(
                f"{len(missing)} of {len(self.paths)} images listed in {annotation_json} are missing "
                f"({', '.join(missing[:5])}{', ...' if len(missing) > 5 else ''}): point at the image folder"
            )
        self.check_image_sizes()


def load_dataset(
    spec: str, class_names: Sequence[str], *, image_ext: str | None = None, strict_classes: bool = True
) -> DetectionDataset:
    """The dataset named by ``voc:ROOT:SPLIT`` or ``coco:ANNOTATION_JSON:IMAGES_ROOT``."""
    kind, _, rest = spec.partition(":")
    first, _, second = rest.rpartition(":")
    if kind not in ("voc", "coco") or not first or not second:
        raise UserError(f"data {spec!r} is not voc:ROOT:SPLIT or coco:ANNOTATION_JSON:IMAGES_ROOT")
    if kind == "voc":
        return VOCDetection(first, second, class_names, image_ext=image_ext, strict_classes=strict_classes)
    return CocoDetection(first, second, class_names, strict_classes=strict_classes)


def collate(batch: Sequence[tuple[torch.Tensor, dict[str, Any]]]) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
    """Images and targets as two lists (detection images may differ in size)."""
    return [image for image, _ in batch], [target for _, target in batch]


class InfiniteBatches:
    """Endless batches of one process's shard, reshuffled every pass, resumable at any batch.

    Pass ``e`` orders the dataset by a permutation drawn from a ``torch.Generator`` seeded with
    ``(seed, e)``, padded by wrapping to a multiple of ``world_size``; rank ``r`` reads every
    ``world_size``-th index from ``r`` (as ``DistributedSampler``), so ranks are disjoint within a pass
    (up to the padding) and read the same number of batches. The shards of successive passes form one
    stream cut into batches of ``batch_size`` (a batch may span two passes), so batch ``b`` depends only on
    ``(seed, rank, world_size, b)``: a run that drew ``batches_drawn`` batches resumes exactly with
    ``start_batch=batches_drawn``. ``workers > 0`` reads items in DataLoader worker processes.
    """

    def __init__(
        self,
        dataset: Dataset,
        batch_size: int,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        start_batch: int = 0,
        workers: int = 0,
    ) -> None:
        if batch_size < 1:
            raise UserError(f"batch size must be at least 1, got {batch_size}")
        if not 0 <= rank < world_size:
            raise UserError(f"rank {rank} is outside 0..{world_size - 1}")
        if len(dataset) == 0:
            raise UserError("the dataset is empty: it needs at least one image")
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.batches_drawn = start_batch
        self.shard_size = math.ceil(len(dataset) / world_size)
        self._workers = workers
        self._iterator: Iterator | None = None
        self._shards: dict[int, torch.Tensor] = {}

    def _shard(self, epoch: int) -> torch.Tensor:
        if epoch not in self._shards:
            self._shards = {e: s for e, s in self._shards.items() if e >= epoch - 1}
            self._shards[epoch] = self._draw_shard(epoch)
        return self._shards[epoch]

    def _draw_shard(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
        order = torch.randperm(len(self.dataset), generator=generator)
        padded = order.repeat(math.ceil(self.shard_size * self.world_size / len(order)))
        return padded[: self.shard_size * self.world_size][self.rank :: self.world_size]

    def batch_indices(self, batch: int) -> list[int]:
        """The dataset indices of batch number ``batch`` of this rank."""
        start = batch * self.batch_size
        first_epoch, last_epoch = start // self.shard_size, (start + self.batch_size - 1) // self.shard_size
        stream = torch.cat([self._shard(e) for e in range(first_epoch, last_epoch + 1)])
        offset = start - first_epoch * self.shard_size
        return stream[offset : offset + self.batch_size].tolist()

    def _index_stream(self) -> Iterator[list[int]]:
        batch = self.batches_drawn
        while True:
            yield self.batch_indices(batch)
            batch += 1

    def __iter__(self) -> InfiniteBatches:
        return self

    def __next__(self) -> tuple[list[torch.Tensor], list[dict[str, Any]]]:
        if self._iterator is None:
            if self._workers > 0:
                loader = DataLoader(
                    self.dataset, batch_sampler=self._index_stream(), num_workers=self._workers, collate_fn=collate
                )
                self._iterator = iter(loader)
            else:
                self._iterator = (collate([self.dataset[i] for i in b]) for b in self._index_stream())
        batch = next(self._iterator)
        self.batches_drawn += 1
        return batch


def infinite_loader(
    dataset: Dataset, batch_size: int, seed: int, rank: int = 0, world_size: int = 1, start_batch: int = 0
) -> InfiniteBatches:
    """Endless ``(images, targets)`` batches; see :class:`InfiniteBatches`."""
    return InfiniteBatches(dataset, batch_size, seed, rank, world_size, start_batch)

import json

import numpy as np
import pytest
import torch
from PIL import Image

from probteacher.data import (
    CocoDetection,
    InfiniteBatches,
    VOCDetection,
    load_dataset,
    parse_voc_xml,
    write_voc_xml,
)
from probteacher.toy import TOY_CLASSES, make_toy_fog
from shared.errors import UserError

CLASSES = ("car", "person")


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    out = tmp_path_factory.mktemp("toy")
    return out, make_toy_fog(out, n_source_train=12, n_target_train=6, n_test=4, workers=1)


def _voc_folder(root, xml_text, image_ext=".png", size=(40, 30), image_id="a"):
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    (root / "Annotations" / f"{image_id}.xml").write_text(xml_text)
    Image.new("RGB", size, (10, 20, 30)).save(root / "JPEGImages" / f"{image_id}{image_ext}")
    (root / "ImageSets" / "Main" / "train.txt").write_text(f"{image_id}\n")
    return root


def _xml(objects, size="<size><width>40</width><height>30</height></size>"):
    return f"<annotation><filename>a.png</filename>{size}{objects}</annotation>"


def test_round_trip_of_a_generated_folder(toy):
    out, summary = toy
    for domain, split in (("source", "train"), ("target", "test")):
        dataset = VOCDetection(out / domain, split, TOY_CLASSES)
        stats = dataset.summary()
        assert stats["images"] == summary["splits"][f"{domain}/{split}"]["images"]
        assert stats["objects"] == summary["splits"][f"{domain}/{split}"]["objects"]
        assert stats["skipped_boxes"] == 0
        image, target = dataset[0]
        assert image.shape == (3, 128, 128) and image.dtype == torch.float32 and 0 <= image.min() <= image.max() <= 1
        assert target["boxes"].dtype == torch.float32 and target["labels"].min() >= 1
        assert target["image_id"] == dataset.ids[0]


def test_writer_reader_round_trip_is_exact(tmp_path):
    boxes = np.array([[0, 0, 10, 12], [3.25, 4.5, 39.75, 30], [5, 6, 7, 8]], np.float32)
    labels = np.array([1, 2, 2])
    write_voc_xml(tmp_path / "a.xml", "a.png", 40, 30, boxes, labels, CLASSES, difficult=[False, True, False])
    text = (tmp_path / "a.xml").read_text()
    assert "<xmin>1</xmin>" in text and "<pose>Unspecified</pose>" in text and "<truncated>0</truncated>" in text
    record = parse_voc_xml(tmp_path / "a.xml", CLASSES)
    np.testing.assert_array_equal(record.boxes, boxes)
    np.testing.assert_array_equal(record.labels, labels)
    np.testing.assert_array_equal(record.difficult, [False, True, False])
    assert (record.width, record.height, record.filename) == (40, 30, "a.png")


def test_png_and_missing_tags_float_coordinates_and_size_from_image(tmp_path):
    obj = (
        "<object><name>person</name>"
        "<bndbox><xmin>2.5</xmin><ymin>3</ymin><xmax>20.5</xmax><ymax>25</ymax></bndbox></object>"
    )
    root = _voc_folder(tmp_path, _xml(obj, size=""))
    dataset = VOCDetection(root, "train", CLASSES)
    _, target = dataset[0]
    torch.testing.assert_close(target["boxes"], torch.tensor([[1.5, 2.0, 20.5, 25.0]]))
    assert target["labels"].tolist() == [2] and target["difficult"].tolist() == [False]
    assert (dataset.records[0].width, dataset.records[0].height) == (40, 30)


def test_boxes_clipped_and_degenerate_skipped(tmp_path):
    objects = (
        "<object><name>car</name><bndbox><xmin>-5</xmin><ymin>1</ymin><xmax>60</xmax><ymax>50</ymax></bndbox></object>"
        "<object><name>car</name><bndbox><xmin>10</xmin><ymin>5</ymin><xmax>9.5</xmax><ymax>9</ymax></bndbox></object>"
        "<object><name>car</name><bndbox><xmin>45</xmin><ymin>5</ymin><xmax>50</xmax><ymax>9</ymax></bndbox></object>"
    )
    root = _voc_folder(tmp_path, _xml(objects))
    record = parse_voc_xml(root / "Annotations" / "a.xml", CLASSES)
    np.testing.assert_array_equal(record.boxes, [[0, 0, 40, 30]])
    assert len(record.skipped) == 2
    assert VOCDetection(root, "train", CLASSES).summary()["skipped_boxes"] == 2


def test_bad_annotations_are_user_errors(tmp_path):
    no_box = "<object><name>car</name></object>"
    (tmp_path / "a.xml").write_text(_xml(no_box))
    with pytest.raises(UserError, match=r"a\.xml.*bndbox"):
        parse_voc_xml(tmp_path / "a.xml", CLASSES)
    no_coord = "<object><name>car</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax></bndbox></object>"
    (tmp_path / "b.xml").write_text(_xml(no_coord))
    with pytest.raises(UserError, match="ymax"):
        parse_voc_xml(tmp_path / "b.xml", CLASSES)
    (tmp_path / "c.xml").write_text(_xml("", size=""))
    with pytest.raises(UserError, match="size"):
        parse_voc_xml(tmp_path / "c.xml", CLASSES)  # neither <size> nor an image


def test_unknown_class_strict_and_lenient(tmp_path):
    obj = "<object><name>bus</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>5</xmax><ymax>5</ymax></bndbox></object>"
    (tmp_path / "a.xml").write_text(_xml(obj))
    with pytest.raises(UserError, match=r"'bus'.*\['car', 'person'\]"):
        parse_voc_xml(tmp_path / "a.xml", CLASSES)
    record = parse_voc_xml(tmp_path / "a.xml", CLASSES, strict_classes=False)
    assert len(record.boxes) == 0 and len(record.skipped) == 1


def test_empty_split_and_missing_folders(tmp_path):
    root = _voc_folder(tmp_path, _xml(""))
    (root / "ImageSets" / "Main" / "train.txt").write_text("\n")
    with pytest.raises(UserError, match="empty"):
        VOCDetection(root, "train", CLASSES)
    with pytest.raises(UserError, match=r"val\.txt"):
        VOCDetection(root, "val", CLASSES)
    (root / "ImageSets" / "Main" / "train.txt").write_text("a\nb\n")
    with pytest.raises(UserError, match="1 of 2 images"):
        VOCDetection(root, "train", CLASSES)


def test_coco_reader(tmp_path):
    Image.new("RGB", (40, 30)).save(tmp_path / "x.png")
    data = {
        "images": [{"id": 7, "file_name": "x.png", "width": 40, "height": 30}],
        "categories": [{"id": 3, "name": "person"}, {"id": 1, "name": "car"}],
        "annotations": [
            {"image_id": 7, "category_id": 1, "bbox": [2, 3, 10, 5], "iscrowd": 0},
            {"image_id": 7, "category_id": 3, "bbox": [30, 20, 20, 20], "iscrowd": 1},
        ],
    }
    (tmp_path / "a.json").write_text(json.dumps(data))
    dataset = load_dataset(f"coco:{tmp_path / 'a.json'}:{tmp_path}", CLASSES)
    assert isinstance(dataset, CocoDetection)
    _, target = dataset[0]
    torch.testing.assert_close(target["boxes"], torch.tensor([[2.0, 3, 12, 8], [30, 20, 40, 30]]))
    assert target["labels"].tolist() == [1, 2] and target["difficult"].tolist() == [False, True]
    assert CocoDetection(tmp_path / "a.json", tmp_path).class_names == ("person", "car")
    with pytest.raises(UserError, match="not in"):
        CocoDetection(tmp_path / "a.json", tmp_path, class_names=("car",))
    assert CocoDetection(tmp_path / "a.json", tmp_path, ("car",), strict_classes=False).summary()["objects"] == 1


class _Indices(torch.utils.data.Dataset):
    def __len__(self):
        return 10

    def __getitem__(self, i):
        return torch.zeros(1), {"index": i}


def _indices(batches, n):
    return [[t["index"] for t in next(batches)[1]] for _ in range(n)]


def test_infinite_batches_deterministic_and_resumable():
    first = _indices(InfiniteBatches(_Indices(), 3, seed=5), 9)
    assert first == _indices(InfiniteBatches(_Indices(), 3, seed=5), 9)
    assert first != _indices(InfiniteBatches(_Indices(), 3, seed=6), 9)
    one_pass = [i for batch in first[:3] for i in batch] + first[3][:1]
    assert sorted(one_pass) == list(range(10))
    resumed = InfiniteBatches(_Indices(), 3, seed=5, start_batch=4)
    assert _indices(resumed, 5) == first[4:] and resumed.batches_drawn == 9


def test_sharding_is_disjoint():
    shards = [_indices(InfiniteBatches(_Indices(), 5, seed=1, rank=r, world_size=2), 1)[0] for r in (0, 1)]
    assert sorted(shards[0] + shards[1]) == list(range(10))  # one batch each, together the whole set
    with pytest.raises(UserError):
        InfiniteBatches(_Indices(), 2, seed=1, rank=2, world_size=2)


def test_an_image_whose_size_differs_from_its_xml_is_refused_when_the_dataset_is_built(tmp_path):
    obj = "<object><name>car</name><bndbox><xmin>2</xmin><ymin>2</ymin><xmax>20</xmax><ymax>20</ymax></bndbox></object>"
    root = _voc_folder(tmp_path, _xml(obj, size="<size><width>80</width><height>60</height></size>"))
    with pytest.raises(UserError, match="differ in size from their annotation"):
        VOCDetection(root, "train", CLASSES)

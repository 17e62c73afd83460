"""The real formats on small files written here in their byte layout: identity folders, RecordIO, .bin."""

import importlib.resources
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from facemae.data import (
    MAGIC,
    ImageFolderFaces,
    RecordIOReader,
    RecordIOWriter,
    denormalize_faces,
    encode_image,
    load_lfw_subset,
    normalize_faces,
    pack_payload,
    pack_record,
    read_verification_bin,
    write_image_folder,
    write_verification_bin,
)
from shared.errors import UserError

MAGIC_BYTES = struct.pack("<I", MAGIC)


def faces(count, size=8, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (count, 3, size, size), dtype=torch.uint8, generator=generator)


def one_line(excinfo):
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_normalize_round_trip():
    pixels = torch.arange(256, dtype=torch.uint8).view(1, 1, 16, 16)
    images = normalize_faces(pixels)
    assert images.min().item() == -1.0 and images.max().item() == 1.0
    assert torch.equal(denormalize_faces(images), pixels)


# --- identity folders ---


def write_folder(root, per_identity):
    images = faces(sum(per_identity))
    labels = [identity for identity, count in enumerate(per_identity) for _ in range(count)]
    write_image_folder(root, images, labels, [f"id{i:02d}" for i in range(len(per_identity))])
    return images


def test_image_folder_reads_identities_in_sorted_order(tmp_path):
    images = write_folder(tmp_path, [2, 3])
    data = ImageFolderFaces(tmp_path)
    assert len(data) == 5 and data.labels == [0, 0, 1, 1, 1] and data.classes == ["id00", "id01"]
    assert torch.equal(torch.stack([data[i][0] for i in range(5)]), images)
    assert data[4][1] == 1
    assert ImageFolderFaces(tmp_path, size=4)[0][0].shape == (3, 4, 4)


def test_jpeg_folders_and_unknown_formats(tmp_path):
    images = faces(4, 16)
    write_image_folder(tmp_path / "jpeg", images, [0, 0, 1, 1], ["a", "b"], image_format="jpeg")
    assert sorted(p.name for p in (tmp_path / "jpeg" / "b").iterdir()) == ["00000.jpg", "00001.jpg"]
    smooth = torch.full((4, 3, 16, 16), 100, dtype=torch.uint8)
    write_image_folder(tmp_path / "flat", smooth, [0, 0, 1, 1], ["a", "b"], image_format="jpeg")
    decoded = ImageFolderFaces(tmp_path / "flat")[3][0]
    assert (decoded.int() - 100).abs().max() <= 2  # lossy, but close
    for write in (
        lambda: write_image_folder(tmp_path / "gif", images, [0, 0, 1, 1], ["a", "b"], image_format="gif"),
        lambda: RecordIOWriter(tmp_path / "rec", 16, image_format="jpg"),
        lambda: write_verification_bin(tmp_path / "p.bin", list(images), [True, False], image_format="bmp"),
    ):
        with pytest.raises(UserError, match="image format must be one of png, jpeg"):
            write()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["flat", "jpeg"]


def test_identity_folder_with_one_image_is_refused(tmp_path):
    write_folder(tmp_path, [2, 1])
    with pytest.raises(UserError) as excinfo:
        ImageFolderFaces(tmp_path)
    assert "id01 holds 1 image" in one_line(excinfo)
    assert len(ImageFolderFaces(tmp_path, min_images=1)) == 3


# --- RecordIO ---


def test_record_layout_and_continuation_by_hand():
    assert pack_record(b"abcdef") == MAGIC_BYTES + struct.pack("<I", 6) + b"abcdef\0\0"
    split = pack_record(b"abcd" + MAGIC_BYTES + b"efgh12")  # the magic at an aligned offset splits the record
    first, last = struct.pack("<I", 1 << 29 | 4), struct.pack("<I", 3 << 29 | 6)
    assert split == MAGIC_BYTES + first + b"abcd" + MAGIC_BYTES + last + b"efgh12\0\0"
    three = pack_record(MAGIC_BYTES + b"ab" + b"\0\0" + MAGIC_BYTES)
    flags = [struct.unpack_from("<I", three, offset)[0] >> 29 for offset in (4, 12, 24)]
    assert flags == [1, 2, 3]
    assert pack_record(b"a" + MAGIC_BYTES + b"b").count(MAGIC_BYTES) == 2  # unaligned: kept, one part


def write_pack(folder, labels, size=8, **kwargs):
    images = faces(len(labels), size)
    with RecordIOWriter(folder, size, **kwargs) as writer:
        keys = [writer.write(image, label) for image, label in zip(images, labels, strict=True)]
    assert keys == list(range(1, len(labels) + 1))
    return images


def test_recordio_round_trip_in_the_insightface_layout(tmp_path):
    labels = [0, 0, 1, 1, 1, 3, 3]  # identity 2 has no image
    images = write_pack(tmp_path, labels)
    assert (tmp_path / "property").read_text() == "4,8,8\n"
    raw = (tmp_path / "train.rec").read_bytes()
    # record 0 first: IRHeader flag 2, then (first identity-header key, end key) = (8, 12)
    assert raw[:8] == MAGIC_BYTES + struct.pack("<I", 24 + 8)
    assert struct.unpack_from("<IfQQff", raw, 8) == (2, 0.0, 0, 0, 8.0, 12.0)
    index = [line.split("\t") for line in (tmp_path / "train.idx").read_text().splitlines()]
    assert [int(key) for key, _ in index] == list(range(12)) and index[0][1] == "0"
    reader = RecordIOReader(tmp_path / "train.rec")
    assert len(reader) == 7 and reader.num_classes == 4
    assert reader.identity_ranges == [(1, 3), (3, 6), (6, 6), (6, 8)]
    assert reader.labels == labels
    assert [reader[i][1] for i in range(7)] == labels
    assert torch.equal(torch.stack([reader[i][0] for i in range(7)]), images)
    assert not list(tmp_path.glob(".*tmp"))


def test_recordio_reassembles_a_split_record(tmp_path):
    png = encode_image(faces(1)[0])
    tail = png + bytes(-(24 + len(png)) % 4) + MAGIC_BYTES + b"trailing bytes after IEND"  # PNG readers stop at IEND
    with RecordIOWriter(tmp_path, 8) as writer:
        writer.write(tail, 0)
        writer.write(png, 0)
    reader = RecordIOReader(tmp_path / "train.rec")
    assert reader.read_record(1)[24:] == tail
    assert torch.equal(reader[0][0], reader[1][0])


def write_raw_pack(folder, payloads, keys=None):
    """A .rec/.idx pair from raw payloads, as another packer might write it."""
    keys = list(range(len(payloads))) if keys is None else keys
    offsets, blob = [], b""
    for payload in payloads:
        offsets.append(len(blob))
        blob += pack_record(payload)
    (folder / "train.rec").write_bytes(blob)
    (folder / "train.idx").write_text("".join(f"{k}\t{o}\n" for k, o in zip(keys, offsets, strict=True)))
    return offsets


def test_pack_without_a_header_record_reads_every_key_as_an_image(tmp_path):
    images = faces(3)
    payloads = [pack_payload(label, encode_image(im)) for label, im in zip([1, 0, 1], images, strict=True)]
    write_raw_pack(tmp_path, payloads, [0, 1, 2])
    reader = RecordIOReader(tmp_path / "train.rec")
    assert reader.identity_ranges is None and reader.num_classes == 2 and reader.labels == [1, 0, 1]
    assert torch.equal(reader[2][0], images[2])
    extra = [pack_payload([1.0, 7.0], encode_image(images[0]))]  # a label array: its first entry is the identity
    write_raw_pack(tmp_path, extra, [5])
    assert RecordIOReader(tmp_path / "train.rec")[0][1] == 1


def test_rec_without_idx_is_refused(tmp_path):
    write_pack(tmp_path, [0, 0])
    (tmp_path / "train.idx").unlink()
    with pytest.raises(UserError) as excinfo:
        RecordIOReader(tmp_path / "train.rec")
    assert "no index train.idx" in one_line(excinfo)


def test_corrupt_magic_and_truncated_record_are_one_line_errors(tmp_path):
    write_pack(tmp_path, [0, 0, 1])
    rec = tmp_path / "train.rec"
    offset = int((tmp_path / "train.idx").read_text().splitlines()[2].split("\t")[1])
    raw = bytearray(rec.read_bytes())
    raw[offset] ^= 0xFF
    rec.write_bytes(raw)
    reader = RecordIOReader(rec)
    with pytest.raises(UserError) as excinfo:
        reader[1]
    assert "record 2" in one_line(excinfo) and "bad record header" in str(excinfo.value)
    raw[offset] ^= 0xFF
    rec.write_bytes(raw[: offset + 20])
    with pytest.raises(UserError) as excinfo:
        RecordIOReader(rec)  # the identity headers after it are gone too
    assert "truncated" in one_line(excinfo)


def test_non_integer_labels_name_the_key(tmp_path):
    image = encode_image(faces(1)[0])
    float64_labels = struct.pack("<IfQQ", 1, 0.0, 0, 0) + np.array([3.0]).tobytes() + image  # 8 bytes, read as 4
    write_raw_pack(tmp_path, [pack_payload(0.0, image), pack_payload(2.5, image), float64_labels], [1, 2, 3])
    with pytest.raises(UserError) as excinfo:
        RecordIOReader(tmp_path / "train.rec")  # no property: the labels are read to count the classes
    assert "record 2 of" in one_line(excinfo) and "label 2.5" in str(excinfo.value)
    (tmp_path / "property").write_text("4,8,8\n")
    reader = RecordIOReader(tmp_path / "train.rec")
    with pytest.raises(UserError, match=r"label 2\.5"):
        reader[1]
    with pytest.raises(UserError, match="image of record 3 of"):  # the float64 label shifts the image bytes
        reader[2]


def test_label_beyond_property_and_missing_key_are_refused(tmp_path):
    write_pack(tmp_path, [0, 1, 1])
    (tmp_path / "property").write_text("1,8,8\n")
    with pytest.raises(UserError, match=r"identity index in 0\.\.0"):
        RecordIOReader(tmp_path / "train.rec")[2]
    idx = tmp_path / "train.idx"
    idx.write_text("".join(line + "\n" for line in idx.read_text().splitlines() if not line.startswith("2\t")))
    with pytest.raises(UserError) as excinfo:
        RecordIOReader(tmp_path / "train.rec")
    assert "has no key 2" in one_line(excinfo)


def test_writer_refuses_unordered_labels_and_keeps_old_files(tmp_path):
    write_pack(tmp_path, [0, 1])
    before = (tmp_path / "train.rec").read_bytes()
    with pytest.raises(UserError, match="identity by identity"), RecordIOWriter(tmp_path, 8) as writer:
        writer.write(faces(1)[0], 1)
        writer.write(faces(1)[0], 0)
    assert (tmp_path / "train.rec").read_bytes() == before
    assert not list(tmp_path.glob(".*tmp"))


# --- verification pairs ---


def test_bin_round_trip_with_ten_pairs(tmp_path):
    images = faces(20, 12)
    issame = [i % 2 == 0 for i in range(10)]
    path = write_verification_bin(tmp_path / "pairs.bin", list(images), issame)
    pairs = read_verification_bin(path)
    assert pairs.name == "pairs" and torch.equal(pairs.images, images)
    assert pairs.issame.tolist() == issame and pairs.issame.dtype == torch.bool
    assert read_verification_bin(path, size=6).images.shape == (20, 3, 6, 6)


def test_bin_from_older_picklers_and_numpy_flags(tmp_path):
    images = [encode_image(image) for image in faces(4)]
    for content in [(images, [True, False]), (images, np.array([True, False]))]:
        path = tmp_path / "old.bin"
        path.write_bytes(pickle.dumps(content, protocol=2))  # bytes go through _codecs.encode at protocol 2
        assert read_verification_bin(path).issame.tolist() == [True, False]


class Payload:
    def __reduce__(self):
        return (Path.touch, (Path(MARKER),))


MARKER = ""


def test_restricted_unpickler_refuses_an_arbitrary_class(tmp_path):
    global MARKER
    MARKER = str(tmp_path / "ran")
    path = tmp_path / "evil.bin"
    path.write_bytes(pickle.dumps(([encode_image(faces(1)[0])] * 2, [Payload()])))
    with pytest.raises(UserError) as excinfo:
        read_verification_bin(path)
    assert "refused for safety" in one_line(excinfo)
    assert not (tmp_path / "ran").exists()


@pytest.mark.parametrize(
    "content", [([b"x"] * 3, [True]), (["text", "text"], [True]), ([b"x", b"x"], [1]), {"bins": []}]
)
def test_bin_of_the_wrong_structure_is_refused(tmp_path, content):
    path = tmp_path / "odd.bin"
    path.write_bytes(pickle.dumps(content))
    with pytest.raises(UserError, match="not \\(list of 2N encoded images"):
        read_verification_bin(path)


def test_truncated_bin_and_undecodable_image(tmp_path):
    path = write_verification_bin(tmp_path / "p.bin", list(faces(2)), [True])
    path.write_bytes(path.read_bytes()[:-30])
    with pytest.raises(UserError, match="corrupt or truncated"):
        read_verification_bin(path)
    path.write_bytes(pickle.dumps(([b"not an image", b"x"], [True])))
    with pytest.raises(UserError, match="pair image 0"):
        read_verification_bin(path)


def test_corrupt_header_record_is_a_one_line_error(tmp_path):
    image = encode_image(faces(1)[0])
    write_raw_pack(tmp_path, [pack_payload([float("nan"), 3.0]), pack_payload(0.0, image)])
    with pytest.raises(UserError) as excinfo:
        RecordIOReader(tmp_path / "train.rec")
    assert "record 0 of" in one_line(excinfo) and "header is corrupt" in str(excinfo.value)


def test_lfw_subset_is_the_100_real_faces_of_the_scikit_image_wheel(monkeypatch):
    faces = load_lfw_subset(32)
    assert faces.shape == (100, 3, 32, 32) and faces.dtype == torch.uint8
    assert torch.equal(faces[:, 0], faces[:, 1]) and torch.equal(faces[:, 1], faces[:, 2])  # grey, replicated
    assert len({bytes(face.numpy()) for face in faces}) == 100  # 100 different crops
    native = load_lfw_subset(25)
    skimage_data = pytest.importorskip("skimage.data")
    expected = torch.from_numpy(skimage_data.lfw_subset()[:100]).mul(255).round().to(torch.uint8)
    assert torch.equal(native[:, 0], expected)  # the faces, not the 100 non-face crops after them

    def missing(name):
        raise ModuleNotFoundError(f"No module named {name!r}")

    monkeypatch.setattr(importlib.resources, "files", missing)
    with pytest.raises(UserError, match="pip install scikit-image"):
        load_lfw_subset()

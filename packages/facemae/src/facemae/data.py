"""Face datasets in the formats their users have on disk, read and written without MXNet.

- identity folders ``root/<identity>/<image>`` (CASIA-WebFace style), through ``shared.data``;
- InsightFace RecordIO packs (``train.rec``, ``train.idx``, ``property``), the byte layout of MXNet's
  ``recordio.py`` and dmlc-core ``recordio.cc``, with InsightFace's record-0 header of identity ranges;
- verification pair files (``lfw.bin``, ``cfp_fp.bin``, ``agedb_30.bin``): a pickle of (encoded images,
  is-same flags), read by an unpickler that admits nothing but those;
- :func:`load_lfw_subset`: the 100 real LFW face crops that ship inside the scikit-image wheel.

Readers give uint8 (3, H, W) tensors; :func:`normalize_faces` maps them to the models' [-1, 1] range.
"""

from __future__ import annotations

import functools
import importlib.resources
import io
import os
import pickle
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from shared.checkpoint import atomic_write
from shared.data import ImageFileDataset, list_image_folder
from shared.errors import UserError, require_path

__all__ = [
    "IdentityBalancedSampler",
    "ImageFolderFaces",
    "RecordIOReader",
    "RecordIOWriter",
    "VerificationPairs",
    "decode_image",
    "denormalize_faces",
    "encode_image",
    "load_lfw_subset",
    "normalize_faces",
    "open_faces",
    "read_verification_bin",
    "write_image_folder",
    "write_verification_bin",
]

ImageLike = bytes | Image.Image | torch.Tensor


def normalize_faces(pixels: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float images in [-1, 1], (x / 255 - 0.5) / 0.5 as in InsightFace."""
    return pixels.float().div(127.5).sub(1.0)


def denormalize_faces(images: torch.Tensor) -> torch.Tensor:
    """Float images in [-1, 1] -> uint8 pixels (clamped and rounded), the inverse of :func:`normalize_faces`."""
    return images.detach().add(1.0).mul(127.5).round().clamp(0, 255).to(torch.uint8)


LFW_SUBSET_FACES = 100  # skimage's lfw_subset: 100 faces, then 100 non-face background crops


def load_lfw_subset(size: int = 32) -> torch.Tensor:
    """The real LFW face crops of scikit-image's ``data.lfw_subset()`` (100 grey 25 x 25 faces, read from the
    ``skimage/data/lfw_subset.npy`` file inside its wheel, never downloaded) as uint8 (100, 3, size, size),
    the grey replicated to three channels and resized bicubically."""
    try:
        path = importlib.resources.files("skimage") / "data" / "lfw_subset.npy"
        crops = np.load(io.BytesIO(path.read_bytes()), allow_pickle=False)[:LFW_SUBSET_FACES]
    except (ModuleNotFoundError, FileNotFoundError, ValueError) as error:
        raise UserError(f"the LFW crops of scikit-image are unavailable ({error}): pip install scikit-image") from None
    faces = torch.from_numpy(crops).float().mul(255).unsqueeze(1).expand(-1, 3, -1, -1)
    if size != faces.shape[-1]:
        faces = torch.nn.functional.interpolate(faces, size=(size, size), mode="bicubic", align_corners=False)
    return faces.round().clamp(0, 255).to(torch.uint8)


def _pixels(image: Image.Image, size: int | None = None) -> torch.Tensor:
    """A PIL image as a uint8 (3, H, W) tensor, resized bilinearly to ``size`` x ``size`` when given."""
    image = image.convert("RGB")
    if size is not None and image.size != (size, size):
        image = image.resize((size, size), Image.Resampling.BILINEAR)
    return torch.from_numpy(np.array(image, dtype=np.uint8)).permute(2, 0, 1).contiguous()


def decode_image(data: bytes, where: str, size: int | None = None) -> torch.Tensor:
    """Encoded JPEG/PNG bytes -> uint8 (3, H, W); undecodable bytes are a one-line error naming ``where``."""
    try:
        with Image.open(io.BytesIO(data)) as image:
            return _pixels(image, size)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise UserError(f"cannot decode the image of {where} ({reason}): the file is corrupt, re-create it") from None


#: Encodings the writers offer: format name -> (PIL format, file extension, save options).
IMAGE_FORMATS = {"png": ("PNG", "png", {}), "jpeg": ("JPEG", "jpg", {"quality": 95})}


def _format_spec(fmt: str) -> tuple[str, str, dict]:
    """The PIL format, file extension and save options of an image format name (a UserError if unknown)."""
    if fmt not in IMAGE_FORMATS:
        raise UserError(f"image format must be one of {', '.join(IMAGE_FORMATS)}, got {fmt!r}")
    return IMAGE_FORMATS[fmt]


def encode_image(image: ImageLike, fmt: str = "png") -> bytes:
    """Encoded bytes of a PIL image or a uint8 (3, H, W) tensor (``png`` is lossless, ``jpeg`` at quality 95,
    MXNet ``pack_img``'s default); bytes pass through unchanged."""
    name, _, options = _format_spec(fmt)
    if isinstance(image, bytes):
        return image
    if isinstance(image, torch.Tensor):
        if image.dtype != torch.uint8 or image.ndim != 3 or image.shape[0] != 3:
            raise ValueError(f"expected a uint8 (3, H, W) tensor, got {image.dtype} {tuple(image.shape)}")
        image = Image.fromarray(image.permute(1, 2, 0).numpy())
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, format=name, **options)
    return buffer.getvalue()


# --- identity folders -------------------------------------------------------------------------------------------


class ImageFolderFaces(ImageFileDataset):
    """Faces in identity folders ``root/<identity>/<image>``; identity index = sorted folder order.

    Items are ``(uint8 (3, size, size) tensor, identity)``. An identity with fewer than ``min_images``
    images is refused (recognition pairs and batch relations need two faces of a person).
    """

    def __init__(self, root: str | os.PathLike, size: int | None = None, min_images: int = 2) -> None:
        items, classes = list_image_folder(root)
        counts = np.bincount([label for _, label in items], minlength=len(classes))
        short = [(name, int(n)) for name, n in zip(classes, counts, strict=True) if n < min_images]
        if short:
            name, n = short[0]
            raise UserError(
                f"identity folder {Path(root) / name} holds {n} image(s), fewer than {min_images} "
                f"({len(short)} such folder(s)): add images of that person or remove the folder"
            )
        super().__init__(items, classes, transform=functools.partial(_pixels, size=size))

    @property
    def labels(self) -> list[int]:
        return self.targets


def write_image_folder(
    root: str | os.PathLike,
    images: Sequence[ImageLike],
    labels: Sequence[int],
    class_names: Sequence[str],
    image_format: str = "png",
) -> Path:
    """Write faces as ``root/<class name>/<00000>.<ext>``, numbered per identity (read back by
    :class:`ImageFolderFaces`)."""
    root = Path(root)
    extension = _format_spec(image_format)[1]
    counts: dict[int, int] = {}
    for image, label in zip(images, labels, strict=True):
        folder = root / class_names[int(label)]
        folder.mkdir(parents=True, exist_ok=True)
        number = counts.get(int(label), 0)
        counts[int(label)] = number + 1
        (folder / f"{number:05d}.{extension}").write_bytes(encode_image(image, image_format))
    return root


def open_faces(path: str | os.PathLike, size: int | None = None) -> ImageFolderFaces | RecordIOReader:
    """A face set on disk: a RecordIO pack (the ``.rec`` file, or a folder holding ``train.rec``) or identity
    folders. Both have ``labels`` and ``num_classes``."""
    path = require_path(path, "face data")
    if path.is_dir() and (path / "train.rec").is_file():
        path = path / "train.rec"
    if path.is_file():
        if path.suffix != ".rec":
            raise UserError(f"{path} is neither a RecordIO .rec file nor a folder of identity folders")
        return RecordIOReader(path, size)
    return ImageFolderFaces(path, size)


class IdentityBalancedSampler(Sampler[list[int]]):
    """Batches of ``identities`` x ``per_identity`` images, so that most relations IRM matches within a batch
    include faces of one person: each identity's images are shuffled and cut into groups of ``per_identity``
    (a remainder is dropped), the groups shuffled and taken ``identities`` at a time (an incomplete last
    batch is dropped). The order depends only on ``(seed, epoch)``; call :meth:`set_epoch` before each epoch.
    Under torchrun, process ``rank`` of ``replicas`` takes every ``replicas``-th batch."""

    def __init__(
        self,
        labels: Sequence[int],
        identities: int,
        per_identity: int,
        seed: int = 0,
        rank: int = 0,
        replicas: int = 1,
    ) -> None:
        labels = np.asarray(labels)
        self.groups = [np.flatnonzero(labels == c) for c in np.unique(labels)]
        self.identities, self.per_identity, self.seed, self.epoch = identities, per_identity, seed, 0
        self.rank, self.replicas = rank, replicas
        if len(self) == 0:
            raise UserError(
                f"{len(labels)} images in {len(self.groups)} identities fill no batch of {identities} identities x "
                f"{per_identity} images: use more data or a smaller batch"
            )

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _batches(self) -> int:
        """Batches of one epoch over all processes."""
        return sum(len(g) // self.per_identity for g in self.groups) // self.identities

    def __len__(self) -> int:
        return self._batches() // self.replicas

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        chunks = []
        for group in self.groups:
            shuffled = rng.permutation(group)
            whole = len(shuffled) // self.per_identity * self.per_identity
            chunks += np.split(shuffled[:whole], whole // self.per_identity) if whole else []
        order = rng.permutation(len(chunks))
        for b in range(self.rank, len(self) * self.replicas, self.replicas):
            picked = order[b * self.identities : (b + 1) * self.identities]
            yield np.concatenate([chunks[i] for i in picked]).tolist()


# --- InsightFace RecordIO ---------------------------------------------------------------------------------------

MAGIC = 0xCED7230A  # dmlc-core RecordIOWriter::kMagic
_MAGIC_BYTES = struct.pack("<I", MAGIC)
_HEADER = struct.Struct("<IfQQ")  # MXNet IRHeader: flag, label, id, id2
_LENGTH_BITS = 29


def _padded(length: int) -> int:
    return (length + 3) // 4 * 4


def pack_record(payload: bytes) -> bytes:
    """One record's bytes as dmlc-core ``RecordIOWriter::WriteRecord`` writes them.

    Each part is magic, lrec (continuation flag << 29 | length), data, zero padding to 4 bytes. Where the
    payload holds the magic number at a 4-byte boundary it is split there (flags 1 start, 2 middle,
    3 end) and the magic itself dropped; the reader puts it back.
    """
    if len(payload) >= 1 << _LENGTH_BITS:
        raise ValueError(f"a record holds less than 2**29 bytes, got {len(payload)}")
    parts, start = [], 0
    for i in range(0, len(payload) // 4 * 4, 4):
        if payload[i : i + 4] == _MAGIC_BYTES:
            parts.append((1 if start == 0 else 2, payload[start:i]))
            start = i + 4
    parts.append((3 if start else 0, payload[start:]))
    out = bytearray()
    for flag, data in parts:
        out += struct.pack("<II", MAGIC, flag << _LENGTH_BITS | len(data)) + data
        out += bytes(_padded(len(data)) - len(data))
    return bytes(out)


def pack_payload(label: float | Sequence[float], data: bytes = b"", record_id: int = 0) -> bytes:
    """MXNet ``recordio.pack``: the 24-byte IRHeader, then ``flag`` float32 labels when the label is a
    sequence (flag = its length, header label 0), then ``data``."""
    if isinstance(label, int | float):
        return _HEADER.pack(0, float(label), record_id, 0) + data
    values = np.asarray(label, dtype=np.float32)
    return _HEADER.pack(values.size, 0.0, record_id, 0) + values.tobytes() + data


def unpack_payload(payload: bytes, where: str) -> tuple[np.ndarray, bytes]:
    """MXNet ``recordio.unpack``: the labels (float32 array: the header label, or the ``flag`` extra labels)
    and the rest of the payload (the encoded image)."""
    if len(payload) < _HEADER.size:
        raise UserError(f"{where} is shorter than its 24-byte header: the file is corrupt, re-create it")
    flag, label, _, _ = _HEADER.unpack_from(payload)
    end = _HEADER.size + 4 * flag
    if flag == 0:
        return np.array([label], dtype=np.float32), payload[_HEADER.size :]
    if len(payload) < end:
        raise UserError(f"{where} announces {flag} labels but is shorter: the file is corrupt, re-create it")
    return np.frombuffer(payload[_HEADER.size : end], dtype=np.float32), payload[end:]


def _read_index(path: Path) -> dict[int, int]:
    """``key<TAB>offset`` lines of a ``.idx`` file."""
    index = {}
    for number, line in enumerate(path.read_text(encoding="ascii", errors="replace").splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 2 or not all(f.isdigit() for f in fields):
            raise UserError(f"{path}:{number} is not 'key<TAB>offset': {line[:80]!r} (re-create the .idx)")
        index[int(fields[0])] = int(fields[1])
    if not index:
        raise UserError(f"{path} lists no records: re-create the .idx beside its .rec")
    return index


class RecordIOReader(Dataset):
    """An InsightFace RecordIO pack (``train.rec`` with ``train.idx``, and ``property`` when present).

    Items are ``(uint8 (3, size, size) tensor, identity)``. Record 0, when its header carries labels
    (first, end), says that image keys run 1..first-1 and keys first..end-1 hold each identity's
    (start, end) image range (InsightFace ``MXFaceDataset``); otherwise, or without a record 0, every
    key is an image. ``property`` (``num_classes,height,width``) bounds the labels.
    """

    def __init__(self, rec_path: str | os.PathLike, size: int | None = None) -> None:
        self.rec_path = require_path(rec_path, "RecordIO file", kind="file")
        idx_path = self.rec_path.with_suffix(".idx")
        if not idx_path.is_file():
            raise UserError(
                f"{self.rec_path} has no index {idx_path.name} beside it: copy the .idx that came with the .rec "
                "(InsightFace packs ship train.rec, train.idx and property together)"
            )
        self.index = _read_index(idx_path)
        self.size = size
        self._handle = None
        self._pid = None
        self.num_classes = self._read_property()
        self.identity_ranges: list[tuple[int, int]] | None = None
        self.keys = sorted(self.index)
        if 0 in self.index:
            meta, _ = unpack_payload(self.read_record(0), self._where(0))
            if meta.size >= 2:
                self._read_identity_headers(*self._key_pair(meta, 0))
        if self.num_classes is None:
            self.num_classes = (
                len(self.identity_ranges) if self.identity_ranges is not None else int(max(self.labels)) + 1
            )

    def _where(self, key: int) -> str:
        return f"record {key} of {self.rec_path}"

    def _read_property(self) -> int | None:
        path = self.rec_path.parent / "property"
        if not path.is_file():
            return None
        fields = path.read_text(encoding="ascii", errors="replace").strip().split(",")
        if len(fields) != 3 or not all(f.strip().isdigit() for f in fields):
            raise UserError(f"{path} is not 'num_classes,height,width': fix it or delete it")
        return int(fields[0])

    def _key_pair(self, labels: np.ndarray, key: int) -> tuple[int, int]:
        """The two keys a header record holds as its first two labels."""
        pair = labels[:2].astype(np.float64)
        if pair.size < 2 or not np.isfinite(pair).all() or not (pair == np.round(pair)).all():
            raise UserError(f"{self._where(key)} holds {labels.tolist()[:2]}, not two keys: the header is corrupt")
        return int(pair[0]), int(pair[1])

    def _read_identity_headers(self, first: int, end: int) -> None:
        if not 1 <= first <= end:
            raise UserError(f"{self._where(0)} gives identity keys {first}..{end - 1}: the header is corrupt")
        self.keys = list(range(1, first))
        ranges = []
        for key in range(first, end):
            bounds, _ = unpack_payload(self.read_record(key), self._where(key))
            start, stop = self._key_pair(bounds, key)
            if not 1 <= start <= stop <= first:
                raise UserError(f"{self._where(key)} gives the image range {start}..{stop - 1}: the header is corrupt")
            ranges.append((start, stop))
        self.identity_ranges = ranges
        missing = next((key for key in self.keys if key not in self.index), None)
        if missing is not None:
            raise UserError(
                f"{self.rec_path.with_suffix('.idx')} has no key {missing}, which record 0 lists as an image "
                f"(keys 1..{first - 1}): re-create the .idx from the .rec, or the pack with its header"
            )

    def __len__(self) -> int:
        return len(self.keys)

    def read_record(self, key: int) -> bytes:
        """The payload of record ``key``, its continuation parts joined as dmlc-core's reader joins them."""
        if key not in self.index:
            raise UserError(f"{self.rec_path.with_suffix('.idx')} has no key {key}: re-create the .idx from the .rec")
        if self._pid != os.getpid():  # one handle per process (DataLoader workers fork)
            self._handle, self._pid = open(self.rec_path, "rb"), os.getpid()  # noqa: SIM115
        handle = self._handle
        handle.seek(self.index[key])
        payload, expected = bytearray(), (0, 1)
        while True:
            head = handle.read(8)
            if len(head) < 8:
                raise UserError(f"{self._where(key)} is truncated: the file is incomplete, copy it again")
            magic, lrec = struct.unpack("<II", head)
            flag, length = lrec >> _LENGTH_BITS, lrec & ((1 << _LENGTH_BITS) - 1)
            if magic != MAGIC or flag not in expected:
                raise UserError(
                    f"{self._where(key)} at byte {self.index[key]} has a bad record header "
                    f"(magic {magic:#010x}, flag {flag}): the file is corrupt or the .idx belongs to another .rec"
                )
            data = handle.read(_padded(length))
            if len(data) < _padded(length):
                raise UserError(f"{self._where(key)} is truncated: the file is incomplete, copy it again")
            payload += data[:length]
            if flag in (0, 3):
                return bytes(payload)
            payload += _MAGIC_BYTES
            expected = (2, 3)

    def _label(self, labels: np.ndarray, key: int) -> int:
        """The identity of an image record, checked: a finite integer below the number of classes."""
        value = float(labels[0])
        bound = self.num_classes if self.num_classes is not None else float("inf")
        if not (np.isfinite(value) and value.is_integer() and 0 <= value < bound):
            expected = f"0..{bound - 1}" if self.num_classes is not None else "0, 1, ..."
            raise UserError(
                f"{self._where(key)} has the label {value!r}, not an identity index in {expected}: the pack was "
                "written with another label type (e.g. float64); re-pack it with float32 labels"
            )
        return int(value)

    @functools.cached_property
    def labels(self) -> list[int]:
        """Every image's identity (from the identity headers when the pack has them, else from each record)."""
        if self.identity_ranges is not None:
            label_of = {k: c for c, (start, stop) in enumerate(self.identity_ranges) for k in range(start, stop)}
            unlabelled = next((k for k in self.keys if k not in label_of), None)
            if unlabelled is not None:
                raise UserError(f"{self._where(unlabelled)} lies in no identity's range: the header is corrupt")
            return [label_of[k] for k in self.keys]
        return [self._label(unpack_payload(self.read_record(k), self._where(k))[0], k) for k in self.keys]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        key = self.keys[index]
        labels, data = unpack_payload(self.read_record(key), self._where(key))
        return decode_image(data, self._where(key), self.size), self._label(labels, key)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_handle": None, "_pid": None}


class RecordIOWriter:
    """Writes ``<prefix>.rec``, ``<prefix>.idx`` and ``property`` into ``folder`` in InsightFace's layout.

    Add images identity by identity (labels 0, 1, ... never decreasing) with :meth:`write`; :meth:`close`
    (or leaving the ``with`` block) adds the identity headers and record 0 and moves the files into place.
    Nothing is replaced when the block fails.
    """

    def __init__(
        self, folder: str | os.PathLike, image_size: int, num_classes: int | None = None, image_format: str = "png"
    ) -> None:
        _format_spec(image_format)  # refuse an unknown format before creating any file
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        self.image_size = image_size
        self.num_classes = num_classes
        self.image_format = image_format
        self.rec_path = self.folder / "train.rec"
        self._tmp = self.folder / ".train.rec.tmp"
        self._file = open(self._tmp, "wb")  # noqa: SIM115
        self._offsets: list[int] = []
        self._labels: list[int] = []
        self._append(pack_payload([0.0, 0.0]))  # record 0, rewritten in place by close()

    def _append(self, payload: bytes) -> None:
        self._offsets.append(self._file.tell())
        self._file.write(pack_record(payload))

    def write(self, image: ImageLike, label: int) -> int:
        """Add one face of identity ``label``; returns its key."""
        previous = self._labels[-1] if self._labels else 0
        if label < previous:
            raise UserError(f"RecordIO images go identity by identity, labels 0, 1, ...: got {label} after {previous}")
        if self.num_classes is not None and label >= self.num_classes:
            raise UserError(f"label {label} is not below the {self.num_classes} classes given to the writer")
        self._labels.append(int(label))
        self._append(pack_payload(float(label), encode_image(image, self.image_format), len(self._offsets)))
        return len(self._offsets) - 1

    def close(self) -> Path:
        """Finish the pack; returns the path of the ``.rec``."""
        if self._file.closed:
            return self.rec_path
        first = len(self._offsets)
        num_classes = self.num_classes if self.num_classes is not None else (max(self._labels, default=-1) + 1)
        for identity in range(num_classes):
            start = 1 + int(np.searchsorted(self._labels, identity, side="left"))
            stop = 1 + int(np.searchsorted(self._labels, identity, side="right"))
            self._append(pack_payload([float(start), float(stop)]))
        header = pack_record(pack_payload([float(first), float(first + num_classes)]))
        self._file.seek(0)
        self._file.write(header)  # same length as the placeholder: two float32 labels either way
        self._file.close()
        lines = "".join(f"{key}\t{offset}\n" for key, offset in enumerate(self._offsets))
        atomic_write(self.folder / "train.idx", lambda f: f.write(lines), binary=False)
        size = self.image_size
        atomic_write(self.folder / "property", lambda f: f.write(f"{num_classes},{size},{size}\n"), binary=False)
        os.replace(self._tmp, self.rec_path)
        return self.rec_path

    def __enter__(self) -> RecordIOWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self._file.close()
            self._tmp.unlink(missing_ok=True)


# --- verification pairs -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class VerificationPairs:
    """Verification pairs: ``images`` (2N, 3, H, W) uint8, pair i = images 2i and 2i+1; ``issame`` (N,) bool."""

    name: str
    images: torch.Tensor
    issame: torch.Tensor


class _RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a class or function that a verification file has no business holding."""


class _PairsUnpickler(pickle.Unpickler):
    """Admits the containers and scalars of a verification file, numpy arrays, and nothing else."""

    ALLOWED = frozenset(
        {
            ("numpy", "ndarray"),
            ("numpy", "dtype"),
            ("numpy.core.multiarray", "_reconstruct"),
            ("numpy._core.multiarray", "_reconstruct"),
            ("numpy.core.multiarray", "scalar"),
            ("numpy._core.multiarray", "scalar"),
            ("_codecs", "encode"),  # bytes pickled by Python 3 at protocol 2
        }
    )

    def find_class(self, module: str, name: str):
        if (module, name) in self.ALLOWED:
            return super().find_class(module, name)
        raise _RefusedGlobal(f"{module}.{name}")


def _as_bytes(item) -> bytes | None:
    if isinstance(item, bytes | bytearray):
        return bytes(item)
    if isinstance(item, np.ndarray) and item.dtype == np.uint8 and item.ndim == 1:
        return item.tobytes()
    return None


def read_verification_bin(path: str | os.PathLike, size: int | None = None) -> VerificationPairs:
    """A verification ``.bin`` (InsightFace ``eval/verification.py`` ``load_bin``): a pickle of (2N encoded
    images, N is-same flags). Pickles can run code, so only lists, tuples, bytes, bools and numpy arrays
    are admitted. Images are resized to ``size`` x ``size`` (default: the first image's width)."""
    path = require_path(path, "verification file", kind="file")
    try:
        with open(path, "rb") as handle:
            content = _PairsUnpickler(handle, encoding="bytes").load()
    except _RefusedGlobal as exc:
        raise UserError(
            f"verification file {path} holds a pickled object ({exc}) besides images and flags; refused for safety "
            "(loading it could run code): use the .bin files InsightFace publishes, or write one with facemae"
        ) from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, IndexError, KeyError, AttributeError) as exc:
        raise UserError(
            f"verification file {path} is corrupt or truncated ({type(exc).__name__}): copy it again"
        ) from None
    bins, issame = content if isinstance(content, tuple | list) and len(content) == 2 else (None, None)
    images = [_as_bytes(b) for b in bins] if isinstance(bins, list | tuple) else [None]
    flags = np.asarray(issame) if isinstance(issame, list | tuple | np.ndarray) else np.zeros(0, dtype=object)
    if None in images or flags.dtype != np.bool_ or flags.ndim != 1 or len(images) != 2 * len(flags) or not len(flags):
        raise UserError(
            f"verification file {path} is not (list of 2N encoded images, list of N booleans): "
            "point at an InsightFace .bin (lfw.bin, cfp_fp.bin, agedb_30.bin)"
        )
    if size is None:
        size = decode_image(images[0], f"pair image 0 of {path}").shape[-1]
    pixels = [decode_image(b, f"pair image {i} of {path}", size) for i, b in enumerate(images)]
    return VerificationPairs(path.stem, torch.stack(pixels), torch.from_numpy(flags.astype(bool)))


def write_verification_bin(
    path: str | os.PathLike, images: Sequence[ImageLike], issame: Sequence[bool], image_format: str = "png"
) -> Path:
    """Write pairs in InsightFace's ``.bin`` layout: pickle of (list of 2N encoded images, list of N bools)."""
    if len(images) != 2 * len(issame) or not issame:
        raise ValueError(f"need 2N images for N > 0 flags, got {len(images)} images and {len(issame)} flags")
    content = ([encode_image(image, image_format) for image in images], [bool(s) for s in issame])
    return atomic_write(path, lambda f: pickle.dump(content, f, protocol=pickle.HIGHEST_PROTOCOL))

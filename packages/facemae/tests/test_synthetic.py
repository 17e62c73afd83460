"""The procedural identity-labelled faces: deterministic, identity over nuisance, written in the real formats."""

import numpy as np
import pytest
import torch

from facemae.data import ImageFolderFaces, RecordIOReader, read_verification_bin
from facemae.synthetic import draw_face, synthetic_faces, synthetic_pairs, write_synthetic_faces
from shared.errors import UserError


def test_faces_are_deterministic_and_an_identity_looks_the_same_in_any_company():
    images, labels = synthetic_faces([3, 4, 5], 2, size=32, seed=7)
    again, _ = synthetic_faces([3, 4, 5], 2, size=32, seed=7)
    assert images.shape == (6, 3, 32, 32) and images.dtype == torch.uint8 and labels.tolist() == [0, 0, 1, 1, 2, 2]
    assert torch.equal(images, again)
    alone, _ = synthetic_faces([5], 2, size=32, seed=7)
    assert torch.equal(alone, images[4:])
    other_seed, _ = synthetic_faces([5], 2, size=32, seed=8)
    assert not torch.equal(other_seed, alone)
    assert not torch.equal(images[0], images[1])  # nuisance: two photos of a person differ
    assert np.array_equal(np.round(draw_face(5, 1, 32, 7) * 255), images[5].permute(1, 2, 0).numpy())


def test_identity_outweighs_nuisance_in_pixel_space():
    images, labels = synthetic_faces(list(range(10)), 6, size=32)
    pixels = images.float().flatten(1)
    distances = torch.cdist(pixels, pixels)
    distances.fill_diagonal_(float("inf"))
    nearest = labels[distances.argmin(1)]
    assert (nearest == labels).float().mean() > 0.6  # chance is 0.1


def test_pairs_follow_the_lfw_fold_layout():
    images, issame = synthetic_pairs([10, 11, 12], pairs=40, folds=10, size=16)
    assert images.shape == (80, 3, 16, 16)
    assert issame.tolist() == [True, True, False, False] * 10


def test_written_dataset_reads_back_through_the_real_readers(tmp_path):
    root = tmp_path / "faces"
    split = write_synthetic_faces(root, size=16, source=(3, 2), target=(2, 3), pair_identities=3, pairs=20)
    source, source_labels = synthetic_faces([0, 1, 2], 2, size=16)
    target, target_labels = synthetic_faces([3, 4], 3, size=16)
    for folder, rec, images, labels in [
        (split.source_folder, split.source_rec, source, source_labels),
        (split.target_folder, split.target_rec, target, target_labels),
    ]:
        faces = ImageFolderFaces(folder)
        assert torch.equal(torch.stack([faces[i][0] for i in range(len(faces))]), images)
        assert faces.labels == labels.tolist()
        pack = RecordIOReader(rec)
        assert torch.equal(torch.stack([pack[i][0] for i in range(len(pack))]), images)
        assert pack.labels == labels.tolist() and pack.num_classes == int(labels.max()) + 1
    assert ImageFolderFaces(split.target_folder).classes == ["id00003", "id00004"]  # disjoint from the source
    pairs = read_verification_bin(split.pairs)
    expected, issame = synthetic_pairs([5, 6, 7], pairs=20, size=16)
    assert torch.equal(pairs.images, expected) and torch.equal(pairs.issame, issame)
    stamp = split.pairs.stat().st_mtime_ns
    settings = dict(size=16, source=(3, 2), target=(2, 3), pair_identities=3, pairs=20)
    assert write_synthetic_faces(root, **settings) == split  # a complete copy is reused, not rewritten
    assert split.pairs.stat().st_mtime_ns == stamp
    assert [p.name for p in tmp_path.iterdir()] == ["faces"]
    with pytest.raises(UserError, match="does not hold synthetic faces made with"):
        write_synthetic_faces(root, size=32)

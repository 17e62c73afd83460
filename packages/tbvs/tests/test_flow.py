import colorsys
import json
import sys

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.ndimage import binary_erosion

from shared.errors import UserError
from tbvs.data import read_instance_masks
from tbvs.flow import endpoint_error, estimate_video_flow, farneback, flow_to_rgb, horn_schunck
from tbvs.synthetic import make_synthetic


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    out = tmp_path_factory.mktemp("flow") / "raw"
    make_synthetic(out, train_videos=6, test_videos=0, seed=1)
    return out


def _interior_pairs(raw):
    """(frame 5, frame 6, oracle flow 5→6, interior of the objects) of every video."""
    meta = json.loads((raw / "meta.json").read_text())
    for vid in meta["videos"]:
        frames = [np.asarray(Image.open(raw / "Release" / "frames" / vid / f"{t:05d}.png")) for t in (5, 6)]
        _, masks = read_instance_masks(raw / "text_annotations" / "a2d_annotation_with_instances" / vid / "00005.h5")
        yield *frames, np.load(raw / "oracle_flow" / vid / "00005.npy"), binary_erosion(masks.any(0), iterations=2)


def test_farneback_matches_oracle_flow_on_object_interiors(raw):
    pytest.importorskip("cv2")
    errors = [endpoint_error(farneback(a, b), oracle, inner) for a, b, oracle, inner in _interior_pairs(raw)]
    print(f"Farneback interior EPE at 3 px/frame: mean {np.mean(errors):.3f} px, max {np.max(errors):.3f} px")
    assert np.mean(errors) < 1.0


def test_horn_schunck_matches_oracle_flow_on_object_interiors(raw):
    errors = [endpoint_error(horn_schunck(a, b), oracle, inner) for a, b, oracle, inner in _interior_pairs(raw)]
    print(f"Horn-Schunck interior EPE at 3 px/frame: mean {np.mean(errors):.3f} px")
    assert np.mean(errors) < 1.0


def _uniform(dx, dy, h=8, w=10):
    return np.stack([np.full((h, w), dx), np.full((h, w), dy)]).astype(np.float32)


def test_flow_to_rgb_gives_four_distinct_hues_and_white_for_zero():
    hues = []
    for dx, dy in [(-3, 0), (3, 0), (0, -3), (0, 3)]:
        image = flow_to_rgb(_uniform(dx, dy))
        assert image.dtype == np.uint8 and image.shape == (8, 10, 3)
        assert (image == image[0, 0]).all()
        h, s, _ = colorsys.rgb_to_hsv(*(image[0, 0] / 255.0))
        assert s > 0.9
        hues.append(h * 360)
    gaps = [min(abs(a - b), 360 - abs(a - b)) for i, a in enumerate(hues) for b in hues[i + 1 :]]
    assert min(gaps) > 45
    assert (flow_to_rgb(np.zeros((2, 4, 4), np.float32)) == 255).all()
    half = flow_to_rgb(np.concatenate([_uniform(2, 0, w=5), _uniform(4, 0, w=5)], axis=2))
    assert half[0, 0].min() > half[0, -1].min()  # normalised by the image's largest magnitude


def test_flow_to_rgb_matches_torchvision():
    utils = pytest.importorskip("torchvision.utils")
    flow = np.random.default_rng(0).normal(size=(2, 12, 15)).astype(np.float32) * 4
    expected = utils.flow_to_image(torch.from_numpy(flow)).permute(1, 2, 0).numpy()
    assert np.abs(flow_to_rgb(flow).astype(int) - expected).max() <= 1


def test_video_flow_reuses_the_last_pair():
    pytest.importorskip("cv2")
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    frames = [np.roll(base, t, axis=1) for t in range(4)]
    flows = estimate_video_flow(frames, "farneback")
    assert len(flows) == 4 and all(f.shape == (2, 32, 32) and f.dtype == np.float32 for f in flows)
    np.testing.assert_array_equal(flows[3], flows[2])
    assert flows[3] is not flows[2]
    assert not (estimate_video_flow(frames[:1])[0]).any()
    with pytest.raises(UserError, match="unknown flow method"):
        estimate_video_flow(frames, "raft")


def test_missing_opencv_is_a_user_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "cv2", None)
    frame = np.zeros((8, 8), np.uint8)
    with pytest.raises(UserError, match="opencv-python-headless"):
        farneback(frame, frame)


# --- RAFT from a local checkpoint ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def raft_small_file(tmp_path_factory):
    """torchvision's raft_small with random weights, saved in torchvision's layout (what a user's file holds)."""
    optical_flow = pytest.importorskip("torchvision.models.optical_flow")
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("raft") / "raft_small.pth"
    torch.save(optical_flow.raft_small(weights=None).state_dict(), path)
    return path


def test_raft_from_a_local_file_gives_one_flow_per_frame_at_any_size(raft_small_file):
    from tbvs.flow import RaftFlow, flow_estimator

    raft = flow_estimator("raft", weights=raft_small_file, size="small")
    assert isinstance(raft, RaftFlow) and raft.name == "raft"
    raft.iterations = 2
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (44, 60, 3), dtype=np.uint8) for _ in range(3)]  # not multiples of 8
    flows = estimate_video_flow(frames, raft)
    assert len(flows) == 3 and all(f.shape == (2, 44, 60) and f.dtype == np.float32 for f in flows)
    assert np.array_equal(flows[2], flows[1]) and all(np.isfinite(f).all() for f in flows)
    assert np.allclose(raft(frames[0], frames[1]), flows[0], atol=1e-5)  # batched pairs equal single calls
    grey = estimate_video_flow([f[..., 0] for f in frames[:2]], raft)
    assert grey[0].shape == (2, 44, 60)


def test_raft_refuses_missing_or_mismatched_weights(raft_small_file, tmp_path):
    from tbvs.flow import RaftFlow, flow_estimator

    with pytest.raises(UserError, match="--raft-weights"):
        flow_estimator("raft")
    with pytest.raises(UserError, match="raft only"):
        flow_estimator("farneback", weights=raft_small_file)
    with pytest.raises(UserError, match="--raft-size"):
        RaftFlow(raft_small_file, size="large")
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="not a readable PyTorch checkpoint"):
        RaftFlow(garbage, size="small")
    with pytest.raises(UserError, match="unknown flow method"):
        estimate_video_flow([np.zeros((8, 8), np.uint8)] * 2, "raft")

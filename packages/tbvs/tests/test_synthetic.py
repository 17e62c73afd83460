import csv
import json

import numpy as np
import pytest
from PIL import Image

from shared.errors import UserError
from tbvs.data import read_instance_masks
from tbvs.synthetic import MOTIONS, SPEED, VOCABULARY, annotated_frames, make_synthetic


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic") / "raw"
    make_synthetic(out, train_videos=6, test_videos=4, seed=3)
    return out


def _meta(raw):
    return json.loads((raw / "meta.json").read_text())


def _position(obj, t, frames):
    t0 = (frames + 1) // 2
    return np.array(obj["position_t0"]) + np.array(MOTIONS[obj["motion"]]) * SPEED * (t - t0)


def test_layout_and_meta(raw):
    meta = _meta(raw)
    assert meta["train_videos"] == 6 and meta["test_videos"] == 4
    assert meta["annotated_frames"] == annotated_frames(9) == [4, 5, 6]
    with open(raw / "Release" / "videoset.csv") as f:
        rows = list(csv.reader(f))
    assert len(rows) == 11 and all(len(r) == 9 for r in rows)  # 10 videos + the missed one, no header
    assert sorted(p.name for p in (raw / "Release" / "frames" / rows[0][0]).iterdir()) == [
        f"{t:05d}.png" for t in range(1, 10)
    ]
    missed = (raw / "text_annotations" / "a2d_missed_videos.txt").read_text().split()
    assert missed == meta["missed_videos"] and missed[0] in {r[0] for r in rows}
    annotation = (raw / "text_annotations" / "a2d_annotation.txt").read_text().splitlines()
    assert annotation[0] == "video_id,instance_id,query"
    assert sum(",1 (copy)," in line for line in annotation) == 1
    assert len(list((raw / "oracle_flow" / rows[0][0]).glob("*.npy"))) == 8


def test_sentences_vocabulary_and_subsets(raw):
    meta = _meta(raw)
    with open(raw / "synthetic_subsets.csv") as f:
        subsets = {(r["video_id"], int(r["instance_id"])): r["subset"] for r in csv.DictReader(f)}
    for vid, video in meta["videos"].items():
        objects = video["objects"]
        queries = [o["query"] for o in objects]
        assert len(set(queries)) == len(queries)  # every query names one object
        assert all(set(q.split()) <= set(VOCABULARY) for q in queries)
        assert all(subsets[vid, o["instance_id"]] == video["subset"] for o in objects)
        if video["subset"] == "ambiguous":
            assert len(objects) == 3 and len({(o["colour"], o["shape"], o["radius"]) for o in objects}) == 1
            assert len({o["motion"] for o in objects}) == 3
            assert all(("still" in q) or (o["motion"] in q) for q, o in zip(queries, objects, strict=True))
        else:
            assert 2 <= len(objects) <= 3 and len({(o["colour"], o["shape"]) for o in objects}) == len(objects)


def test_no_position_shortcut_and_no_overlap(raw):
    meta = _meta(raw)
    size = meta["size"]
    for vid, video in meta["videos"].items():
        for o in video["objects"]:
            r = o["radius"]
            assert (
                r + 12 <= min(o["position_t0"]) and max(o["position_t0"]) <= size - 1 - r - 12
            )  # same box for all motions
        for t in meta["annotated_frames"]:
            _, masks = read_instance_masks(
                raw / "text_annotations" / "a2d_annotation_with_instances" / vid / f"{t:05d}.h5"
            )
            assert masks.sum(0).max() == 1  # disjoint instances


def test_h5_masks_are_transposed_and_centred_on_recorded_positions(raw):
    meta = _meta(raw)
    checked = 0
    for vid, video in meta["videos"].items():
        for t in meta["annotated_frames"]:
            path = raw / "text_annotations" / "a2d_annotation_with_instances" / vid / f"{t:05d}.h5"
            ids, masks = read_instance_masks(path)
            for iid, mask in zip(ids, masks, strict=True):
                obj = video["objects"][iid]
                ys, xs = np.nonzero(mask)
                centroid = np.array([xs.mean(), ys.mean()])
                np.testing.assert_allclose(centroid, _position(obj, t, meta["frames"]), atol=0.75)
                checked += 1
    assert checked >= 30


def test_oracle_flow_moves_object_texture_exactly(raw):
    meta = _meta(raw)
    vid = next(v for v, video in meta["videos"].items() if any(o["motion"] != "still" for o in video["objects"]))
    frames = [np.asarray(Image.open(raw / "Release" / "frames" / vid / f"{t:05d}.png")) for t in (5, 6)]
    flow = np.load(raw / "oracle_flow" / vid / "00005.npy")
    assert flow.dtype == np.float32 and flow.shape == (2, 96, 96)
    ys, xs = np.nonzero(np.abs(flow).sum(0) > 0)
    dx, dy = flow[0, ys, xs].astype(int), flow[1, ys, xs].astype(int)
    assert len(ys) > 50 and set(np.abs(np.concatenate([dx, dy]))) <= {0, SPEED}
    np.testing.assert_array_equal(frames[1][ys + dy, xs + dx], frames[0][ys, xs])


def test_deterministic_and_refuses_non_empty_output(tmp_path):
    a = make_synthetic(tmp_path / "a", train_videos=1, test_videos=1, seed=7, oracle_flow=False)
    b = make_synthetic(tmp_path / "b", train_videos=1, test_videos=1, seed=7, oracle_flow=False)
    assert a == b
    assert (tmp_path / "a" / "Release" / "frames" / "synv0000000" / "00003.png").read_bytes() == (
        tmp_path / "b" / "Release" / "frames" / "synv0000000" / "00003.png"
    ).read_bytes()
    with pytest.raises(UserError, match="not empty"):
        make_synthetic(tmp_path / "a", train_videos=1, test_videos=1)

import json
import shutil

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

from shared.errors import UserError
from tbvs.data import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ClipDataset,
    Sample,
    build_a2d_samples,
    build_jhmdb_samples,
    prepare_a2d,
    prepare_jhmdb,
    read_a2d_annotations,
    read_instance_masks,
    read_list_file,
    read_puppet_mask,
    write_list_file,
)
from tbvs.synthetic import MOTIONS, SPEED, make_synthetic

MEAN = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
STD = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)


@pytest.fixture(scope="module")
def raw(tmp_path_factory):
    out = tmp_path_factory.mktemp("a2d") / "raw"
    make_synthetic(out, train_videos=6, test_videos=4, seed=0)
    return out


@pytest.fixture(scope="module")
def prepared(raw, tmp_path_factory):
    dest = tmp_path_factory.mktemp("prepared")
    prepare_a2d(raw, dest, flow="oracle")
    return dest


def _meta(raw):
    return json.loads((raw / "meta.json").read_text())


def _one_line_error(excinfo):
    assert "\n" not in str(excinfo.value)


def test_raw_sample_count_excludes_missed_video_and_copy_row(raw):
    meta = _meta(raw)
    rows = (raw / "text_annotations" / "a2d_annotation.txt").read_text().splitlines()[1:]
    missed = meta["missed_videos"][0]
    assert any(r.startswith(missed) for r in rows) and any("1 (copy)" in r for r in rows)
    assert len(read_a2d_annotations(raw / "text_annotations" / "a2d_annotation.txt")) == len(rows) - 1
    for split in ("train", "test"):
        samples = build_a2d_samples(raw, split)
        expected = sum(
            len(v["objects"]) * 3 for vid, v in meta["videos"].items() if v["split"] == split and vid != missed
        )
        assert len(samples) == expected == meta["samples"][split]
        assert missed not in {s.video for s in samples}
        assert {s.frame for s in samples} == {4, 5, 6}
        assert len(set(samples)) == len(samples)  # the '1 (copy)' duplicate is gone


def test_single_instance_h5_is_transposed(tmp_path):
    mask = np.zeros((4, 6), np.uint8)
    mask[1, 4] = 1
    with h5py.File(tmp_path / "00001.h5", "w") as f:
        f.create_dataset("instance", data=np.array([2]))
        f.create_dataset("reMask", data=mask.T)  # (W, H) when the frame holds one instance
    ids, masks = read_instance_masks(tmp_path / "00001.h5")
    assert ids.tolist() == [2] and masks.shape == (1, 4, 6)
    np.testing.assert_array_equal(masks[0], mask.astype(bool))


def test_palette_masks_hold_instance_id_plus_one(raw, prepared):
    meta = _meta(raw)
    for vid, video in list(meta["videos"].items())[:4]:
        if vid in meta["missed_videos"]:
            continue
        image = Image.open(prepared / "A2D" / "Annotations_visualize" / vid / "00005.png")
        assert image.mode == "P"
        labels = np.asarray(image)
        assert set(np.unique(labels)) == {0} | {o["instance_id"] + 1 for o in video["objects"]}
        for o in video["objects"]:
            x, y = o["position_t0"]  # frame 5 is t0
            assert labels[y, x] == o["instance_id"] + 1


def test_prepared_layout(raw, prepared):
    base = prepared / "A2D"
    vid = build_a2d_samples(raw, "test")[0].video
    names = [f"{t:05d}.png" for t in range(1, 10)]
    assert sorted(p.name for p in (base / "allframes" / f"{vid}.mp4").iterdir()) == names
    assert sorted(p.name for p in (base / "allframes_flow" / f"{vid}.mp4").iterdir()) == names
    last, before = (np.asarray(Image.open(base / "allframes_flow" / f"{vid}.mp4" / n)) for n in names[-1:-3:-1])
    np.testing.assert_array_equal(last, before)  # the last frame reuses flow (F-1 -> F)
    lines = (base / "a2d_txt" / "test.txt").read_text().splitlines()
    assert lines[0].split(",", 4)[:4] == [f"{vid}/00004", "0", "1", "0"]
    subsets = json.loads((base / "a2d_txt" / "subsets.json").read_text())
    assert subsets[vid]["0"] == _meta(raw)["videos"][vid]["subset"]


def test_list_file_query_with_comma_round_trips(tmp_path):
    samples = [Sample("vidA", 2, 7, "the man, who is running, on the left", 11), Sample("vidB", 0, 12, "a dog")]
    write_list_file(tmp_path / "test.txt", samples, 1)
    assert (tmp_path / "test.txt").read_text().splitlines()[
        0
    ] == "vidA/00007,11,1,2,the man, who is running, on the left"
    assert read_list_file(tmp_path / "test.txt") == samples


def _clip_frames(ds, i):
    return [int(ds.frames[ds.samples[i].video][j][:5]) for j in ds.clip_indices(i)]


def test_train_clip_order_is_back_forward_target_clamped(prepared):
    ds = ClipDataset(prepared, "train", size=96, max_ref_offset=3)
    assert ds[4]["clip_frames"].tolist() == _clip_frames(ds, 4)
    offsets = set()
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            back, forward, target = _clip_frames(ds, i)
            assert target == ds.samples[i].frame
            assert 1 <= target - back <= 3 and 1 <= forward - target <= 3
            offsets |= {target - back, forward - target}
    assert offsets == {1, 2, 3}
    wide = ClipDataset(prepared, "train", size=96, max_ref_offset=8)
    clips = np.array([_clip_frames(wide, i) for i in range(len(wide))])
    assert clips.min() == 1 and clips.max() == 9  # clamped into the video, never wrapped
    assert (clips[:, 0] < clips[:, 2]).all() and (clips[:, 1] > clips[:, 2]).all()


def test_test_clip_order_and_outputs(prepared):
    ds = ClipDataset(prepared, "test", size=128)
    item = ds[0]
    t = ds.samples[0].frame
    assert item["clip_frames"].tolist() == [t - 1, t + 1, t]
    assert item["images"].shape == item["flows"].shape == (3, 3, 128, 128)
    assert item["mask"].shape == (1, 128, 128) and set(item["mask"].unique().tolist()) == {0.0, 1.0}
    assert item["orig_size"].tolist() == [96, 96] and item["letterbox"].tolist() == [128, 128, 0, 0]
    assert item["subset"] in ("ambiguous", "appearance") and item["query"].startswith("the ")
    labels = np.asarray(Image.open(prepared / "A2D" / "Annotations_visualize" / item["video"] / f"{t:05d}.png"))
    assert torch.equal(ds.gt_mask(0), torch.from_numpy(labels == item["instance_id"] + 1))
    single = ClipDataset(prepared, "test", size=96, clip_len=1)[0]
    assert single["clip_frames"].tolist() == [t] and single["images"].shape == (1, 3, 96, 96)


def test_colour_jitter_is_shared_by_frames_and_flows_and_reproducible(prepared):
    plain = ClipDataset(prepared, "train", size=96, color_jitter=(0, 0, 0, 0))
    jittered = ClipDataset(prepared, "train", size=96, color_jitter=(0.3, 0, 0, 0))
    a, b = plain[3], jittered[3]
    assert torch.equal(a["clip_frames"], b["clip_frames"])
    ratios = []
    for key in ("images", "flows"):
        x, y = a[key] * STD + MEAN, b[key] * STD + MEAN
        keep = (x > 0.1) & (y < 0.95) & (x < 0.95)
        ratios.append(y[keep] / x[keep])
    ratio = torch.cat(ratios)
    assert abs(ratio.mean().item() - 1) > 1e-3 and ratio.std() < 1e-3  # one brightness factor for the whole clip
    again = jittered[3]
    assert torch.equal(again["images"], b["images"]) and torch.equal(again["flows"], b["flows"])
    jittered.set_epoch(1)
    assert not torch.equal(jittered[3]["images"], b["images"])


def test_shuffled_flow_comes_from_another_video(prepared):
    ds = ClipDataset(prepared, "test", size=96)
    shuffled = ClipDataset(prepared, "test", size=96, shuffle_flow=True)
    assert all(src != vid for vid, src in shuffled.flow_source.items())
    assert sorted(shuffled.flow_source.values()) == shuffled.videos
    assert torch.equal(shuffled[0]["images"], ds[0]["images"])
    assert not torch.equal(shuffled[0]["flows"], ds[0]["flows"])
    assert ClipDataset(prepared, "test", size=96, shuffle_flow=True).flow_source == shuffled.flow_source


def test_farneback_and_none_flow_preparation(raw, tmp_path):
    pytest.importorskip("cv2")
    summary = prepare_a2d(raw, tmp_path / "fb", flow="farneback")
    none = prepare_a2d(raw, tmp_path / "none", flow="none")
    assert summary["train"] == none["train"] == _meta(raw)["samples"]["train"]
    vid = build_a2d_samples(raw, "train")[0].video
    white = np.asarray(Image.open(tmp_path / "none" / "A2D" / "allframes_flow" / f"{vid}.mp4" / "00003.png"))
    assert (white == 255).all()
    item = ClipDataset(tmp_path / "fb", "train", size=96)[0]
    assert item["flows"].shape == (3, 3, 96, 96)


def test_frames_decoded_from_mp4(tmp_path):
    pytest.importorskip("cv2")
    raw = tmp_path / "raw"
    make_synthetic(raw, train_videos=1, test_videos=1, mp4=True, oracle_flow=False)
    originals = {p.parent.name: np.asarray(Image.open(p)) for p in raw.glob("Release/frames/*/00005.png")}
    shutil.rmtree(raw / "Release" / "frames")
    prepare_a2d(raw, tmp_path / "prep", flow="none")
    prepared = [vid for vid in originals if (tmp_path / "prep" / "A2D" / "allframes" / f"{vid}.mp4").is_dir()]
    assert len(prepared) == 2  # the third video is the missed one
    for vid in prepared:
        folder = tmp_path / "prep" / "A2D" / "allframes" / f"{vid}.mp4"
        assert len(list(folder.glob("*.png"))) == 9
        decoded = np.asarray(Image.open(folder / "00005.png")).astype(int)
        assert np.abs(decoded - originals[vid]).mean() < 8


def test_jhmdb_layout_round_trips(tmp_path):
    raw = tmp_path / "raw"
    meta = make_synthetic(raw, fmt="jhmdb", test_videos=3, seed=2)
    header = (raw / "jhmdb_annotation.txt").read_text().splitlines()
    assert header[0] == "video_id,query" and len(header) == 4
    vid, video = next(iter(meta["videos"].items()))
    masks = read_puppet_mask(raw / "puppet_mask" / "synthetic" / vid / "puppet_mask.mat")
    assert masks.shape == (9, 96, 96)
    target = video["objects"][0]
    for t in (1, 5, 9):
        ys, xs = np.nonzero(masks[t - 1])
        expected = np.array(target["position_t0"]) + np.array(MOTIONS[target["motion"]]) * SPEED * (t - 5)
        np.testing.assert_allclose([xs.mean(), ys.mean()], expected, atol=0.75)
    samples = build_jhmdb_samples(raw)
    assert len(samples) == 9 and {s.frame for s in samples} == {3, 5, 7}
    assert prepare_jhmdb(raw, tmp_path / "prep", flow="oracle")["test"] == 9
    ds = ClipDataset(tmp_path / "prep", "test", size=96, dataset="jhmdb")
    item = ds[0]
    assert item["query"] == target["query"] and item["clip_frames"].tolist() == [2, 4, 3]
    assert torch.equal(ds.gt_mask(0), torch.from_numpy(masks[2] == 1))
    assert item["subset"] == video["subset"]


def test_jhmdb_masks_with_255_read_as_one(tmp_path):
    raw = tmp_path / "raw"
    make_synthetic(raw, fmt="jhmdb", test_videos=2, seed=4, oracle_flow=False)
    prepare_jhmdb(raw, tmp_path / "prep", flow="none")
    ds = ClipDataset(tmp_path / "prep", "test", size=96, dataset="jhmdb")
    path = ds._mask_path(ds.samples[0])
    before = ds.gt_mask(0)
    Image.fromarray((np.asarray(Image.open(path)) * 255).astype(np.uint8)).save(path)
    assert before.any() and torch.equal(ds.gt_mask(0), before)


def test_errors_are_one_line_user_errors(raw, prepared, tmp_path):
    with pytest.raises(UserError, match="list file") as e:
        ClipDataset(prepared, "val", size=96)
    _one_line_error(e)

    bad = tmp_path / "bad_list"
    shutil.copytree(prepared, bad)
    (bad / "A2D" / "a2d_txt" / "test.txt").write_text("vid/00001,0,1,zero,a query\n")
    with pytest.raises(UserError, match="line 1") as e:
        ClipDataset(bad, "test", size=96)
    _one_line_error(e)

    empty = tmp_path / "empty_video"
    shutil.copytree(prepared, empty)
    vid = read_list_file(empty / "A2D" / "a2d_txt" / "train.txt")[0].video
    for p in (empty / "A2D" / "allframes" / f"{vid}.mp4").iterdir():
        p.unlink()
    with pytest.raises(UserError, match="has no frames") as e:
        ClipDataset(empty, "train", size=96)
    _one_line_error(e)

    sizes = tmp_path / "sizes"
    shutil.copytree(prepared, sizes)
    ds = ClipDataset(sizes, "test", size=96)
    s = ds.samples[0]
    Image.new("RGB", (48, 48)).save(sizes / "A2D" / "allframes_flow" / f"{s.video}.mp4" / f"{s.frame:05d}.png")
    with pytest.raises(UserError, match=r"allframes_flow.*48x48 but the frames") as e:
        ds[0]
    _one_line_error(e)

    ghost = tmp_path / "ghost_raw"
    shutil.copytree(raw, ghost, ignore=shutil.ignore_patterns("oracle_flow", "frames"))
    vid = build_a2d_samples(raw, "test")[0].video
    with open(ghost / "text_annotations" / "a2d_annotation.txt", "a") as f:
        f.write(f"{vid},7,the ghost\n")
    with pytest.raises(UserError, match="instance 7") as e:
        build_a2d_samples(ghost, "test")
    _one_line_error(e)

    with pytest.raises(UserError, match="already exists"):
        prepare_a2d(raw, prepared)
    with pytest.raises(UserError, match="unknown flow"):
        prepare_a2d(raw, tmp_path / "x", flow="raft")

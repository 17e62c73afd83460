import numpy as np
import pytest
import torch
import torch.nn.functional as F
from rdkit import Chem

from shared.errors import UserError
from tyger import selection
from tyger.chem import ecfp4_bitvects
from tyger.selection import SELECTORS, kcenter_greedy, select, select_tyger


def _brute_kcenter(points, labelled, candidates, budget, weights=None):
    d = torch.cdist(points, points)
    w = torch.ones(len(points)) if weights is None else weights
    centres = list(labelled)
    picks = []
    for _ in range(budget):
        best, best_score = None, -1.0
        for u in candidates:
            if u in picks:
                continue
            dist = d[u, centres].min().item() if centres else (points[u] - points[candidates].mean(0)).norm().item()
            score = dist * w[u].item()
            if score > best_score:
                best, best_score = u, score
        picks.append(best)
        centres.append(best)
    return picks


def test_kcenter_matches_brute_force():
    g = torch.Generator().manual_seed(3)
    points = torch.randn(120, 2, generator=g)
    labelled, candidates = list(range(5)), list(range(5, 120))
    picks, scores = kcenter_greedy(points, labelled, candidates, 10)
    assert picks == _brute_kcenter(points, labelled, candidates, 10)
    assert scores == sorted(scores, reverse=True)
    weights = torch.rand(120, generator=g)
    weighted, _ = kcenter_greedy(points, labelled, candidates, 10, weights=weights[candidates])
    assert weighted == _brute_kcenter(points, labelled, candidates, 10, weights)
    no_labels, _ = kcenter_greedy(points, [], candidates, 6)
    assert no_labels == _brute_kcenter(points, [], candidates, 6)


def test_kcenter_first_pick_is_farthest_and_ties_to_lowest_index():
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 0.0], [-5.0, 0.0], [0.0, 2.0]])
    assert kcenter_greedy(points, [0], [1, 2, 3, 4], 1)[0] == [2]  # 2 and 3 tie at distance 5
    assert kcenter_greedy(points, [0], [1, 2, 3, 4], 2)[0] == [2, 3]


def test_kcenter_20k_never_builds_pool_by_pool(monkeypatch):
    real_cdist = torch.cdist
    largest = []

    def cdist(a, b, *args, **kwargs):
        largest.append(a.shape[0] * b.shape[0])
        return real_cdist(a, b, *args, **kwargs)

    monkeypatch.setattr(torch, "cdist", cdist)
    points = torch.randn(20_000, 16)
    labelled = list(range(0, 20_000, 4))
    candidates = sorted(set(range(20_000)) - set(labelled))
    picks, _ = kcenter_greedy(points, labelled, candidates, 20, chunk=2048)
    assert len(set(picks)) == 20 and not set(picks) & set(labelled)
    assert largest and max(largest) <= 2048 * 2048


def test_tyger_selector_properties():
    z = torch.randn(60, 8)
    labelled, candidates = [0, 1, 2], list(range(3, 60))
    plain = select_tyger(labelled, candidates, 8, embeddings=z, beta=0.0)
    assert len(set(plain)) == 8 and set(plain) <= set(candidates)
    assert plain == kcenter_greedy(F.normalize(z, dim=1), labelled, candidates, 8)[0]
    constant = select_tyger(labelled, candidates, 8, embeddings=z, predicted_loss=torch.full((60,), 0.7), beta=1.0)
    assert constant == plain
    loss = torch.zeros(60)
    loss[40] = 10.0
    informed = select_tyger(labelled, candidates, 8, embeddings=z, predicted_loss=loss, beta=1.0)
    assert informed[0] == 40  # every other candidate's weight is clipped to eps


def test_typicality_by_hand_and_the_weight_steers_away_from_outliers():
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [10.0, 0.0]])
    # k = 2 nearest other points: (1 + 2) / 2, (1 + sqrt 5) / 2, (2 + sqrt 5) / 2, (9 + 10) / 2
    expected = 1 / torch.tensor([1.5, (1 + 5**0.5) / 2, (2 + 5**0.5) / 2, 9.5])
    assert torch.allclose(selection.typicality(points, range(4), range(4), k=2, chunk=3), expected)
    assert torch.allclose(selection.typicality(points, [0], [1, 2, 3], k=1), torch.tensor([1.0]))
    # a sampled reference: a point outside it keeps its nearest reference row, one inside skips itself
    assert torch.allclose(selection.typicality(points, [0, 1], [1, 3], k=1), 1 / torch.tensor([1.0, 9.0]))
    # a dense cluster and a few far outliers: plain k-center starts with an outlier, the typicality weight does not
    gen = torch.Generator().manual_seed(0)
    cluster, outliers = torch.randn(50, 2, generator=gen) * 0.1 + torch.tensor([1.0, 0.0]), torch.tensor([[0.0, 1.0]])
    z = torch.cat([cluster, outliers, -outliers])
    candidates = list(range(len(z)))
    assert select_tyger([0], candidates[1:], 1, embeddings=z, beta=0.0)[0] >= 50
    assert select_tyger([0], candidates[1:], 1, embeddings=z, beta=0.0, gamma=1.0)[0] < 50


def test_greedy_coverage_beats_random():
    g = torch.Generator().manual_seed(0)
    points = torch.rand(400, 2, generator=g)
    candidates = list(range(400))

    def radius(picks):
        return torch.cdist(points, points[picks]).min(1).values.max().item()

    greedy = radius(kcenter_greedy(points, [], candidates, 12)[0])
    rand = np.mean([radius(select("random", [], candidates, 12, seed=s)) for s in range(5)])
    assert greedy < rand


def test_baselines_and_registry():
    n, labelled, candidates = 40, [0, 1], list(range(2, 40))
    probs = torch.rand(n, 3)
    mc = torch.rand(10, n, 3)
    inputs = dict(
        embeddings=torch.randn(n, 4), features=torch.randn(n, 4), probs=probs, mc_outputs=mc,
        predicted_loss=torch.rand(n), task_type="multilabel", seed=1,
        fingerprints=ecfp4_bitvects([Chem.MolFromSmiles("C" * (i % 12 + 1) + "O" * (i % 3)) for i in range(n)]),
    )  # fmt: skip
    for name in SELECTORS:
        picks = select(name, labelled, candidates, 5, **inputs)
        assert len(set(picks)) == 5 and set(picks) <= set(candidates), name
    assert select("random", labelled, candidates, 5, seed=1) == select("random", labelled, candidates, 5, seed=1)
    top = select("learning-loss", labelled, candidates, 3, predicted_loss=torch.arange(n, dtype=torch.float))
    assert top == [39, 38, 37]
    uncertain = torch.full((n, 1), 0.99)
    uncertain[7] = 0.5
    assert select("entropy", labelled, candidates, 1, probs=uncertain, task_type="binary") == [7]
    assert select("margin", labelled, candidates, 1, probs=uncertain, task_type="binary") == [7]
    varied = torch.zeros(10, n, 1)
    varied[::2, 9] = 1.0
    assert select("bald", labelled, candidates, 1, mc_outputs=varied, task_type="binary") == [9]
    assert select("bald", labelled, candidates, 1, mc_outputs=varied, task_type="regression") == [9]


def test_badge_distance_identity_and_first_pick():
    g = torch.Generator().manual_seed(1)
    probs, feats = torch.rand(30, 3, generator=g), torch.randn(30, 5, generator=g)
    a = probs - (probs > 0.5).float()
    grad = (a[:, :, None] * feats[:, None, :]).reshape(30, -1)  # the explicit gradient embedding
    picks = select("badge", [], list(range(30)), 6, probs=probs, features=feats, task_type="multilabel", seed=0)
    assert picks[0] == int(grad.norm(dim=1).argmax()) and len(set(picks)) == 6
    same = select("badge", [], list(range(30)), 6, probs=probs, features=feats, task_type="multilabel", seed=0)
    assert picks == same
    with pytest.raises(UserError, match="'badge' selector"):
        select("badge", [], list(range(30)), 2, probs=probs, features=feats, task_type="regression")


def test_clear_errors():
    with pytest.raises(UserError, match="supports only binary, multilabel, multiclass"):
        select("entropy", [], [0, 1, 2], 1, probs=torch.rand(3, 1), task_type="regression")
    with pytest.raises(UserError, match="margin"):
        select("margin", [], [0, 1, 2], 1, probs=torch.rand(3, 1), task_type="regression")
    with pytest.raises(UserError, match="larger than the 3 unlabelled"):
        select("random", [], [0, 1, 2], 4)
    with pytest.raises(UserError, match="unknown selector"):
        select("vaal", [], [0, 1], 1)
    with pytest.raises(ValueError, match="needs embeddings"):
        select("tyger", [], [0, 1], 1)
    assert selection.CHUNK == 4096

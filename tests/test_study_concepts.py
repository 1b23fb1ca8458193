"""Ground-truth concepts per location and the AUROC used for concept alignment."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import roc_auc_score

from diffdict.studies.concepts import auroc_matrix, concept_matrix, location_concepts
from diffdict.toyworld.scenes import Scene, SceneObject


def test_auroc_matches_sklearn_with_ties():
    rng = np.random.default_rng(0)
    scores = np.where(rng.random((200, 5)) < 0.6, 0.0, rng.random((200, 5)))  # many tied zeros
    targets = rng.random((200, 3)) < 0.3
    ours = auroc_matrix(scores, targets)
    for f in range(5):
        for c in range(3):
            assert abs(ours[f, c] - roc_auc_score(targets[:, c], scores[:, f])) < 1e-9
    assert np.isnan(auroc_matrix(scores, np.zeros((200, 1), dtype=bool))).all()


def test_location_concepts_follow_the_rendered_masks():
    circle = SceneObject(shape="circle", colour="red", size="large", position="left", cx=16, cy=32, half=12)
    scene = Scene(objects=(circle,), background="black", style="striped", seed=0)
    labels = location_concepts(scene, (8, 8))
    centre = labels[4 * 8 + 2]  # row 4, col 2: inside the circle at x=16, y=32
    assert centre == {"colour:red", "shape:circle", "size:large", "position:left", "style:striped"}
    assert labels[0] == {"background:black", "pattern:p000"} and labels[7] == {"background:black", "pattern:p000"}
    names, matrix = concept_matrix(labels)
    assert matrix.shape == (64, len(names)) and matrix[:, names.index("background:black")].sum() > 40

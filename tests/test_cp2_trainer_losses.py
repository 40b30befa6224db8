"""CP²'s losses against hand-written float64 references, and the model's parts.

The references below are written from the definitions (loops over pixels and images in
Python floats), not from the vectorised code they check:

* instance loss: MoCo InfoNCE of the normalised foreground sums, τ = 0.2, against a queue;
* dense loss: [CP2] ``main.py``: for each foreground key pixel j a softmax over all query
  pixels i, ``-log p(i | j)`` averaged over the foreground pairs, then over the images.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision

from decal.trainers.cp2.config import ContrastConfig, ModelConfig
from decal.trainers.cp2.losses import cp2_dense_loss, cp2_instance_loss, dense_accuracy, masked_average_pool
from decal.trainers.cp2.model import CP2Model, build_cp2_model, build_resnet, match_prefix
from decal.trainers.cp2.segmentation import confusion_matrix, resize_short_side, segmentation_metrics


def _unit(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """Random vectors normalised along axis 1."""
    x = rng.normal(size=shape)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _masks(rng: np.random.Generator, n: int, length: int) -> np.ndarray:
    m = (rng.random((n, length)) < 0.5).astype(np.float64)
    m[:, 0] = 1.0  # at least one foreground pixel per image
    return m


# --------------------------------------------------------------------------- references


def reference_instance_loss(q, k, mask_q, mask_k, queue, tau):
    """Per image: pool, normalise, logits [q·k, q·n_1..n_K]/τ, -log softmax[0]; mean."""
    n_images, channels, _ = q.shape
    total = 0.0
    for n in range(n_images):
        pooled = []
        for emb, mask in ((q[n], mask_q[n]), (k[n], mask_k[n])):
            s = [sum(float(emb[c, l]) * float(mask[l]) for l in range(emb.shape[1])) for c in range(channels)]
            norm = math.sqrt(sum(v * v for v in s))
            pooled.append([v / norm for v in s])
        qp, kp = pooled
        logits = [sum(a * b for a, b in zip(qp, kp)) / tau]
        for j in range(queue.shape[1]):
            logits.append(sum(qp[c] * float(queue[c, j]) for c in range(channels)) / tau)
        top = max(logits)
        log_sum = top + math.log(sum(math.exp(v - top) for v in logits))
        total += -(logits[0] - log_sum)
    return total / n_images


def reference_dense_loss(q, k, mask_q, mask_k, tau):
    """Per image: mean over fg pairs (i in M_q, j in M_k) of -log(exp(s_ij) / Σ_i' exp(s_i'j));
    images without a pair are left out; mean over the others."""
    values = []
    for n in range(q.shape[0]):
        lq, lk = q.shape[2], k.shape[2]
        s = [[sum(float(q[n, c, i]) * float(k[n, c, j]) for c in range(q.shape[1])) / tau for j in range(lk)] for i in range(lq)]
        terms = []
        for j in range(lk):
            if not mask_k[n, j]:
                continue
            log_denominator = math.log(sum(math.exp(s[i][j]) for i in range(lq)))
            for i in range(lq):
                if mask_q[n, i]:
                    terms.append(-(s[i][j] - log_denominator))
        if terms:
            values.append(sum(terms) / len(terms))
    return sum(values) / len(values) if values else 0.0


# --------------------------------------------------------------------------- losses


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_instance_loss_matches_the_float64_reference(dtype: torch.dtype) -> None:
    rng = np.random.default_rng(0)
    n, c, lq, lk, K = 3, 8, 6, 5, 7
    q, k = _unit(rng, n, c, lq), _unit(rng, n, c, lk)
    mq, mk = _masks(rng, n, lq), _masks(rng, n, lk)
    queue = rng.normal(size=(c, K))
    queue /= np.linalg.norm(queue, axis=0, keepdims=True)  # (C, K), unit columns as the model's queue
    t = lambda a: torch.tensor(a, dtype=dtype)  # noqa: E731
    q_pool, k_pool = masked_average_pool(t(q), t(mq)), masked_average_pool(t(k), t(mk))
    loss, logits = cp2_instance_loss(q_pool, k_pool, t(queue), temperature=0.2)
    expected = reference_instance_loss(q, k, mq, mk, queue, 0.2)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert float(loss) == pytest.approx(expected, rel=tol, abs=tol)
    assert logits.shape == (n, 1 + K)


def test_masked_average_pool_is_the_normalised_foreground_mean() -> None:
    rng = np.random.default_rng(1)
    emb = torch.tensor(_unit(rng, 2, 4, 5))
    mask = torch.tensor([[1, 0, 1, 0, 0], [0, 0, 0, 0, 0]], dtype=torch.float64)
    pooled = masked_average_pool(emb, mask)
    mean = emb[0][:, [0, 2]].mean(dim=1)
    torch.testing.assert_close(pooled[0], mean / mean.norm())
    assert torch.count_nonzero(pooled[1]) == 0  # an empty mask pools to zero (as [CP2])


@pytest.mark.parametrize("tau", [1.0, 0.5])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_dense_loss_matches_the_float64_reference(tau: float, dtype: torch.dtype) -> None:
    rng = np.random.default_rng(2)
    n, c, lq, lk = 3, 6, 7, 5  # L_q != L_k: a softmax over the wrong axis cannot pass
    q, k = _unit(rng, n, c, lq), _unit(rng, n, c, lk)
    mq, mk = _masks(rng, n, lq), _masks(rng, n, lk)
    t = lambda a: torch.tensor(a, dtype=dtype)  # noqa: E731
    loss, logits = cp2_dense_loss(t(q), t(k), t(mq), t(mk), temperature=tau)
    expected = reference_dense_loss(q, k, mq, mk, tau)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    assert float(loss) == pytest.approx(expected, rel=tol, abs=tol)
    assert logits.shape == (n, lq, lk)
    # the softmax is over the query pixels: the other axis gives another value
    wrong = -(logits.log_softmax(dim=2) * (t(mq)[:, :, None] * t(mk)[:, None, :])).sum((1, 2)) / (
        t(mq).sum(1) * t(mk).sum(1)
    )
    assert abs(float(wrong.mean()) - expected) > 1e-3


def test_dense_loss_leaves_out_images_without_pairs() -> None:
    rng = np.random.default_rng(3)
    q, k = _unit(rng, 2, 4, 4), _unit(rng, 2, 4, 4)
    mq, mk = _masks(rng, 2, 4), _masks(rng, 2, 4)
    mk[1] = 0.0  # the second image has no foreground key pixel
    loss, _ = cp2_dense_loss(torch.tensor(q), torch.tensor(k), torch.tensor(mq), torch.tensor(mk))
    assert math.isfinite(float(loss))
    assert float(loss) == pytest.approx(reference_dense_loss(q[:1], k[:1], mq[:1], mk[:1], 1.0), rel=1e-12)
    empty, _ = cp2_dense_loss(torch.tensor(q), torch.tensor(k), torch.tensor(mq), torch.zeros(2, 4, dtype=torch.float64))
    assert float(empty) == 0.0


def test_dense_accuracy_is_cp2s_acc_seg() -> None:
    logits = torch.zeros(2, 2, 2)
    logits[0, 1, 1] = 5.0  # image 0: best pair (1, 1)
    logits[1, 0, 0] = 5.0  # image 1: best pair (0, 0)
    mq = torch.tensor([[0.0, 1.0], [0.0, 1.0]])
    mk = torch.tensor([[0.0, 1.0], [1.0, 1.0]])
    assert float(dense_accuracy(logits, mq, mk)) == 0.5


# --------------------------------------------------------------------------- model parts


@pytest.mark.parametrize("depth", ["resnet18", "resnet50"])
def test_resnet_output_stride(depth: str) -> None:
    x = torch.randn(1, 3, 64, 64)
    for stride, side in ((16, 4), (8, 8)):
        resnet = build_resnet(depth, stride)
        trunk = torch.nn.Sequential(*list(resnet.children())[:-2])
        assert trunk(x).shape[-2:] == (side, side)


def test_bottleneck_dilation_is_torchvisions() -> None:
    ours = build_resnet("resnet50", 16)
    theirs = torchvision.models.resnet50(weights=None, replace_stride_with_dilation=[False, False, True])
    a = [(n, m.stride, m.dilation, m.padding) for n, m in ours.named_modules() if isinstance(m, torch.nn.Conv2d)]
    b = [(n, m.stride, m.dilation, m.padding) for n, m in theirs.named_modules() if isinstance(m, torch.nn.Conv2d)]
    assert a == b


def _tiny_model(queue: int = 5, momentum: float = 0.9) -> CP2Model:
    torch.manual_seed(0)
    return build_cp2_model(
        ModelConfig(backbone="resnet18", aspp_channels=16, projection_dim=8), ContrastConfig(queue_size=queue, momentum=momentum)
    )


def test_forward_momentum_update_and_queue() -> None:
    model = _tiny_model(queue=5, momentum=0.9)
    model.train()
    x_q, x_k = torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64)
    mask = torch.zeros(2, 4, 4, dtype=torch.uint8)
    mask[:, 1:3, 1:3] = 1
    # the key branch starts as a copy of the query branch and gets no gradient
    for p, pk in zip(model.encoder_q.parameters(), model.encoder_k.parameters()):
        assert torch.equal(p, pk) and not pk.requires_grad
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    out = model(x_q, x_k, mask, mask)
    total = out["loss_instance"] + 0.2 * out["loss_dense"]
    assert float(out["loss"].detach()) == pytest.approx(float(total.detach()), rel=1e-6)
    out["loss"].backward()
    optimizer.step()
    before_k = [p.detach().clone() for p in model.encoder_k.parameters()]
    after_q = [p.detach().clone() for p in model.encoder_q.parameters()]
    assert int(model.queue_ptr) == 2
    queue_before = model.queue.clone()
    model(x_q, x_k, mask, mask)
    # k ← 0.9 k + 0.1 q, once per forward
    for p_k, b_k, a_q in zip(model.encoder_k.parameters(), before_k, after_q):
        torch.testing.assert_close(p_k, 0.9 * b_k + 0.1 * a_q)
    # the second batch's keys are at columns 2, 3: the normalised pooled key embeddings
    with torch.no_grad():
        k_emb = model.encoder_k(x_k)
        expected = masked_average_pool(k_emb, mask.reshape(2, -1).float())
    torch.testing.assert_close(model.queue[:, 2:4].T, expected, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(model.queue[:, [0, 1, 4]], queue_before[:, [0, 1, 4]])
    assert int(model.queue_ptr) == 4


def test_queue_wraps_around() -> None:
    model = _tiny_model(queue=5)
    keys = torch.nn.functional.normalize(torch.randn(3, 8), dim=1)
    model.enqueue(keys)
    model.enqueue(2 * keys)  # positions 3, 4, then 0
    assert int(model.queue_ptr) == 1
    torch.testing.assert_close(model.queue[:, 0], 2 * keys[2])
    torch.testing.assert_close(model.queue[:, 3:5].T, 2 * keys[:2])
    torch.testing.assert_close(model.queue[:, 1:3].T, keys[1:])


def test_eval_mode_leaves_the_queue_and_key_encoder_alone() -> None:
    model = _tiny_model()
    model.eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    mask = torch.ones(2, 4, 4)
    with torch.no_grad():
        model(torch.randn(2, 3, 64, 64), torch.randn(2, 3, 64, 64), mask, mask)
    for key, value in model.state_dict().items():
        assert torch.equal(value, state[key]), key


def test_quick_tuning_loads_backbone_weights(tmp_path) -> None:
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)
    # a MoCo-style checkpoint: {"state_dict": {"module.encoder_q.<resnet key>": ...}} with an MLP fc,
    # and the key encoder's copy, which must not be picked
    moco = {f"module.encoder_q.{k}": v for k, v in reference.state_dict().items() if not k.startswith("fc.")}
    moco.update({f"module.encoder_k.{k}": torch.zeros_like(v) for k, v in reference.state_dict().items()})
    moco["module.encoder_q.fc.0.weight"] = torch.randn(4, 512)
    torch.save({"state_dict": moco, "epoch": 800}, tmp_path / "moco.pth")
    torch.save(reference.state_dict(), tmp_path / "torchvision.pth")
    for name in ("moco.pth", "torchvision.pth"):
        cfg = ModelConfig(backbone="resnet18", aspp_channels=16, backbone_weights=str(tmp_path / name))
        model = build_cp2_model(cfg, ContrastConfig(queue_size=4))
        backbone = model.encoder_q.encoder.backbone.state_dict()
        for key, value in reference.state_dict().items():
            if not key.startswith("fc."):
                torch.testing.assert_close(backbone[key], value)
        # the key branch starts from the loaded weights
        for p, pk in zip(model.encoder_q.parameters(), model.encoder_k.parameters()):
            assert torch.equal(p, pk)
    torch.save(torchvision.models.resnet34(weights=None).state_dict(), tmp_path / "r34.pth")
    with pytest.raises(ValueError, match="backbone weights"):
        build_cp2_model(ModelConfig(backbone="resnet18", aspp_channels=16, backbone_weights=str(tmp_path / "r34.pth")),
                        ContrastConfig(queue_size=4))  # fmt: skip


def test_match_prefix_prefers_the_query_encoder() -> None:
    target = {"conv1.weight", "layer1.0.conv1.weight"}
    keys = ["module.encoder_k.conv1.weight", "module.encoder_k.layer1.0.conv1.weight",
            "module.encoder_q.conv1.weight", "module.encoder_q.layer1.0.conv1.weight"]  # fmt: skip
    assert match_prefix(keys, target) == "module.encoder_q."
    assert match_prefix(["conv1.weight"], target) == ""


# --------------------------------------------------------------------------- mIoU


def test_segmentation_metrics_by_hand() -> None:
    label = torch.tensor([[0, 0, 1, 1], [2, 2, 255, 1]])
    pred = torch.tensor([[0, 1, 1, 1], [2, 0, 3, 1]])
    confusion = confusion_matrix(pred, label, num_classes=5)
    assert int(confusion.sum()) == 7  # the ignored pixel is left out
    metrics = segmentation_metrics(confusion, ["bg", "a", "b", "c", "d"])
    # class 0: TP 1, FP 1 (a 2 predicted 0), FN 1 → 1/3; class 1: TP 3, FP 1 → 3/4; class 2: TP 1, FN 1 → 1/2
    # class 3 only predicted on an ignored pixel → never occurs; class 4 never occurs
    assert metrics["IoU/bg"] == pytest.approx(1 / 3)
    assert metrics["IoU/a"] == pytest.approx(3 / 4)
    assert metrics["IoU/b"] == pytest.approx(1 / 2)
    assert "IoU/c" not in metrics and "IoU/d" not in metrics
    assert metrics["mIoU"] == pytest.approx((1 / 3 + 3 / 4 + 1 / 2) / 3)
    assert metrics["aAcc"] == pytest.approx(5 / 7)
    assert metrics["mAcc"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert metrics["num_classes_present"] == 3


def test_resize_short_side_caps_the_long_side() -> None:
    assert resize_short_side(500, 375, 512, 2048) == (683, 512)
    assert resize_short_side(4000, 100, 512, 2048) == (2048, 51)

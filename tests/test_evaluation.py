"""Every evaluation metric on constructed cases with known answers, and the suite end to end."""

from __future__ import annotations

import json
import math

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from diti_hf.data.schemas import CELEBA_ATTRIBUTES, CELEBA_SCHEMA, LFW_ATTRIBUTES, LFW_SCHEMA, AttributeSchema
from diti_hf.data.shapes import ShapeFactor, generate_shapes, render_shapes
from diti_hf.evaluation import (
    EvaluationConfig,
    ModelFunctions,
    ProbeConfig,
    average_precision,
    celeba_protocol,
    chunk_masks,
    counterfactual_score,
    dataset_arrays,
    decodable_chunks,
    evaluate_pipeline,
    fit_linear_probes,
    flip_rates,
    lfw_protocol,
    load_attribute_splits,
    mse,
    pearson_r,
    psnr,
    reconstruction_metrics,
    spearman_r,
    split_indices,
    ssim,
    summarise_flips,
    timestep_alignment,
    train_oracle,
)
from diti_hf.evaluation.alignment import group_chunks
from diti_hf.partition import TimestepPartition


# ------------------------------------------------------------------------------------------------ helpers
def _splits(x: torch.Tensor, y: torch.Tensor, seed: int = 0) -> tuple[dict, dict]:
    idx = split_indices(len(x), (0.6, 0.2, 0.2), seed)
    return {s: x[i] for s, i in idx.items()}, {s: y[i] for s, i in idx.items()}


class LookupModel:
    """
    A perfectly modular fake model over a shapes dataset: it recognises each image by its bytes, writes factor `f`
    one-hot into chunk `slots[f]` of z, and its swap renders A with exactly the factors whose chunk lies in the
    swapped range taken from B. Its oracle reads factors exactly.
    """

    def __init__(self, dataset, factors, partition: TimestepPartition, slots: dict[str, int]):
        self.factors, self.partition, self.slots = factors, partition, slots
        images, labels, self.names, self.num_classes = dataset_arrays(dataset)
        self.table = {self._key(im): lab for im, lab in zip(images, labels)}

    @staticmethod
    def _key(image: torch.Tensor) -> bytes:
        return ((image + 1) * 127.5).round().to(torch.uint8).numpy().tobytes()

    def codes(self, images: torch.Tensor) -> torch.Tensor:
        return torch.stack([self.table[self._key(im)] for im in images])

    def encode(self, images: torch.Tensor) -> torch.Tensor:
        codes = self.codes(images)
        z = torch.zeros(len(images), self.partition.latent_dim)
        for j, name in enumerate(self.names):
            lo, _ = self.partition.chunk_dims(self.slots[name])
            z[:, lo : lo + self.num_classes[j]] = torch.nn.functional.one_hot(codes[:, j], self.num_classes[j]).float()
        return z

    def render(self, codes: torch.Tensor) -> torch.Tensor:
        res = int(self.resolution)
        return torch.from_numpy(render_shapes(codes.numpy(), self.factors, res)).permute(0, 3, 1, 2).float() / 255

    def swap(self, source: torch.Tensor, target: torch.Tensor, ranges) -> torch.Tensor:
        self.resolution = source.shape[-1]
        a, b = self.codes(source), self.codes(target)
        out = []
        for lo, hi in ranges:
            first, last = self.partition.chunks_for_timesteps(lo, hi)
            c = a.clone()
            for j, name in enumerate(self.names):
                if first <= self.slots[name] < last:
                    c[:, j] = b[:, j]
            out.append(self.render(c))
        return torch.stack(out, 1)

    def predict(self, images: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
        return self.codes(images)

    def functions(self) -> ModelFunctions:
        return ModelFunctions(self.encode, self.partition, self.swap, lambda x: (x / 2 + 0.5).clamp(0, 1))


def _easy_factors() -> list[ShapeFactor]:
    return [
        ShapeFactor("bg", "background", [(0.1, 0.1, 0.4), (0.4, 0.1, 0.1), (0.1, 0.4, 0.1)]),
        ShapeFactor("size", "scale", [0.12, 0.22]),
        ShapeFactor("x", "position_x", [0.3, 0.7]),
        ShapeFactor("pattern", "texture", ["plain", "checker"]),
    ]


# ------------------------------------------------------------------------------------------------ metrics
def test_average_precision_hand_computed():
    # positives at ranks 1, 3, 5: AP = (1/1 + 2/3 + 3/5) / 3
    ap = average_precision(torch.tensor([0.9, 0.8, 0.7, 0.6, 0.5]), torch.tensor([1, 0, 1, 0, 1]))
    assert float(ap) == pytest.approx((1 + 2 / 3 + 3 / 5) / 3)
    # a tie forms one threshold: (0.9 → P=1, R=.5), (0.5 → P=2/3, R=1) → 0.5·1 + 0.5·2/3
    ap = average_precision(torch.tensor([0.9, 0.5, 0.5, 0.1]), torch.tensor([1, 1, 0, 0]))
    assert float(ap) == pytest.approx(0.5 + 0.5 * 2 / 3)
    # perfect ranking, reversed ranking, no positive, batched rows
    assert float(average_precision(torch.tensor([3.0, 2, 1]), torch.tensor([1, 1, 0]))) == 1.0
    assert float(average_precision(torch.tensor([1.0, 2, 3]), torch.tensor([1, 0, 0]))) == pytest.approx(1 / 3)
    assert math.isnan(float(average_precision(torch.tensor([1.0, 2]), torch.tensor([0, 0]))))
    rows = average_precision(torch.tensor([[3.0, 2, 1], [1.0, 2, 3]]), torch.tensor([[1, 1, 0], [1, 0, 0]]))
    assert rows.tolist() == pytest.approx([1.0, 1 / 3])
    with pytest.raises(ValueError, match="same shape"):
        average_precision(torch.zeros(3), torch.zeros(4))


def test_correlations_hand_computed():
    assert float(pearson_r(torch.tensor([1.0, 2, 3]), torch.tensor([2.0, 4, 6]))) == pytest.approx(1.0)
    assert float(pearson_r(torch.tensor([1.0, 2, 3]), torch.tensor([3.0, 2, 1]))) == pytest.approx(-1.0)
    assert math.isnan(float(pearson_r(torch.tensor([1.0, 1, 1]), torch.tensor([1.0, 2, 3]))))
    assert spearman_r([1, 2, 3, 4], [1, 10, 100, 1000]) == pytest.approx(1.0)
    # ties get average ranks: x ranks (1, 2.5, 2.5, 4), y ranks (1, 3, 2, 4) → 4.5 / √(4.5 · 5)
    assert spearman_r([1, 2, 2, 3], [1, 3, 2, 4]) == pytest.approx(4.5 / math.sqrt(4.5 * 5))
    assert math.isnan(spearman_r([1], [2]))


def test_linear_probe_known_answers():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (600, 2), generator=g)
    # factor 0 one-hot in dims 0..2, factor 1 absent (noise only)
    x = torch.cat([torch.nn.functional.one_hot(y[:, 0], 3).float(), torch.randn(600, 5, generator=g)], 1)
    feats, targets = _splits(x, y)
    result = fit_linear_probes(feats, targets, num_classes=[3, 3], config=ProbeConfig(epochs=10, lr=0.05))
    acc, ap = result.metrics["accuracy"][0], result.metrics["average_precision"][0]
    assert acc[0] == 1.0 and ap[0] == pytest.approx(1.0)
    assert abs(float(acc[1]) - float(result.chance[1])) < 0.12  # noise decodes nothing
    assert result.best_epoch.shape == (1, 2) and 0 <= int(result.best_epoch.max()) < 10
    # a bank of masked probes: without dims 0..2 factor 0 is at chance; each probe equals the probe trained alone
    masks = torch.tensor([[True] * 8, [False] * 3 + [True] * 5])
    bank = fit_linear_probes(feats, targets, num_classes=[3, 3], masks=masks, config=ProbeConfig(epochs=10, lr=0.05))
    alone = fit_linear_probes(
        {s: v[:, 3:] for s, v in feats.items()}, targets, num_classes=[3, 3], config=ProbeConfig(epochs=10, lr=0.05)
    )
    assert bank.metrics["accuracy"][0, 0] == 1.0
    assert bank.metrics["accuracy"][1, 0] < 0.5
    torch.testing.assert_close(bank.metrics["accuracy"][1], alone.metrics["accuracy"][0])
    # deterministic under the seed
    again = fit_linear_probes(feats, targets, num_classes=[3, 3], config=ProbeConfig(epochs=10, lr=0.05))
    torch.testing.assert_close(again.metrics["average_precision"], result.metrics["average_precision"])


def test_linear_probe_binary_and_regression():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(500, 4, generator=g)
    binary = (x[:, :2] > 0).float()
    feats, targets = _splits(x, binary)
    result = fit_linear_probes(feats, targets, "binary", config=ProbeConfig(epochs=20, lr=0.05, selection="joint"))
    assert result.metrics["average_precision"].min() > 0.98
    assert (result.best_epoch == result.best_epoch[0, 0]).all()  # joint selection: one epoch
    values = x[:, :3] @ torch.tensor([[1.0, 0.0, 2.0], [0.0, -1.0, 0.0], [0.5, 0.0, 0.0]])
    feats, targets = _splits(x, values)
    result = fit_linear_probes(feats, targets, "regression", config=ProbeConfig(epochs=30, lr=0.05))
    assert result.metrics["pearson_r"].min() > 0.99
    assert result.metrics["mse"].max() < 0.05


def test_linear_probe_bad_inputs():
    x = {s: torch.randn(10, 3) for s in ("train", "val", "test")}
    y = {s: torch.randint(0, 2, (10, 1)) for s in ("train", "val", "test")}
    with pytest.raises(ValueError, match="task"):
        fit_linear_probes(x, y, "ranking")
    with pytest.raises(ValueError, match="splits"):
        fit_linear_probes({"train": x["train"]}, y)
    with pytest.raises(ValueError, match="masks"):
        fit_linear_probes(x, y, masks=torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="0/1"):
        fit_linear_probes(x, {s: v.float() * 3 for s, v in y.items()}, "binary")
    with pytest.raises(ValueError, match="num_classes"):
        fit_linear_probes(x, y, num_classes=[1])
    with pytest.raises(ValueError, match="selection"):
        ProbeConfig(selection="best")
    with pytest.raises(ValueError, match="fractions"):
        split_indices(10, (0.5, 0.5))


# ------------------------------------------------------------------------------------------------ alignment
def test_chunk_masks_and_groups():
    prefix = chunk_masks([2, 3, 6], "prefix")
    single = chunk_masks([2, 3, 6], "single")
    assert prefix.int().tolist() == [[1, 1, 0, 0, 0, 0], [1, 1, 1, 0, 0, 0], [1] * 6]
    assert single.int().tolist() == [[1, 1, 0, 0, 0, 0], [0, 0, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1]]
    part = TimestepPartition(16, 8)
    ends, steps = group_chunks(part, 4)
    assert ends == [4, 8, 12, 16] and steps == [(0, 250), (250, 500), (500, 750), (750, 1000)]
    with pytest.raises(ValueError, match="increasing"):
        chunk_masks([3, 2])


def test_decodable_chunks_hand_matrix():
    acc = torch.tensor([[0.3, 0.9, 1.0], [0.3, 0.4, 1.0], [0.34, 0.33, 0.35]])
    chance = torch.tensor([0.3, 0.3, 0.33])
    # factor 0: gain 0.6 of 0.7 (≥ 0.9 · 0.7? no: 0.6 < 0.63) → chunk 2; with threshold 0.8 → chunk 1
    assert decodable_chunks(acc, chance, 0.9) == [2, 2, None]
    assert decodable_chunks(acc, chance, 0.8) == [1, 2, None]
    with pytest.raises(ValueError, match="threshold"):
        decodable_chunks(acc, chance, 1.5)


def test_alignment_of_an_encoder_that_copies_factors_into_known_chunks():
    g = torch.Generator().manual_seed(0)
    part = TimestepPartition(latent_dim=32, num_chunks=8)  # 4 dims per chunk
    slots = [6, 1, 3]  # factor f is copied into chunk slots[f]
    y = torch.randint(0, 3, (600, 3), generator=g)
    z = 0.3 * torch.randn(600, 32, generator=g)
    for f, c in enumerate(slots):
        z[:, 4 * c : 4 * c + 3] += 2 * torch.nn.functional.one_hot(y[:, f], 3).float()
    feats, labels = _splits(z, y)
    granularity = {"coarse": 9.0, "fine": 1.0, "middle": 4.0}
    result = timestep_alignment(
        feats, labels, part, ["coarse", "fine", "middle"], [3, 3, 3], granularity, config=ProbeConfig(lr=0.02)
    )
    assert result.decodable_chunk == slots
    assert result.decodable_timestep == [(750 + 874) / 2, (125 + 249) / 2, (375 + 499) / 2]
    assert result.spearman == pytest.approx(1.0)
    for f, c in enumerate(slots):
        assert result.single_accuracy[f, c] > 0.95
        others = torch.cat([result.single_accuracy[f, :c], result.single_accuracy[f, c + 1 :]])
        assert others.max() < 0.5  # no other chunk carries it
        assert result.prefix_accuracy[f, c - 1] < 0.5 and result.prefix_accuracy[f, c] > 0.95
    # the reverse ordering of granularities gives -1
    reverse = timestep_alignment(feats, labels, part, ["coarse", "fine", "middle"], [3, 3, 3],
                                 {"coarse": 1.0, "fine": 9.0, "middle": 4.0}, config=ProbeConfig(lr=0.02))  # fmt: skip
    assert reverse.spearman == pytest.approx(-1.0)
    payload = result.to_dict()
    assert payload["decodable_chunk"] == {"coarse": 6, "fine": 1, "middle": 3}
    with pytest.raises(ValueError, match="latent_dim"):
        timestep_alignment(feats, labels, TimestepPartition(16, 4), ["a", "b", "c"])
    with pytest.raises(ValueError, match="granularity"):
        timestep_alignment(feats, labels, part, ["a", "b", "c"], granularity={"a": 1.0})


# ------------------------------------------------------------------------------------------------ counterfactual
def test_flip_rates_and_summary_hand_computed():
    labels_a = torch.tensor([[0, 0], [1, 0], [0, 1]])
    labels_b = torch.tensor([[1, 0], [0, 1], [1, 0]])
    # range 0 flips factor 0 for all pairs; range 1 flips factor 1 where it differs, and factor 0 of pair 0 only
    predictions = torch.stack(
        [torch.tensor([[1, 0], [0, 0], [1, 1]]), torch.tensor([[1, 0], [1, 1], [0, 0]])], 1
    )  # (N=3, R=2, F=2)
    rates = flip_rates(predictions, labels_a, labels_b)
    assert rates["num_pairs"].tolist() == [3, 2]
    torch.testing.assert_close(rates["flip"], torch.tensor([[1.0, 1 / 3], [0.0, 1.0]], dtype=torch.float64))
    torch.testing.assert_close(rates["stay"], torch.tensor([[0.0, 2 / 3], [1.0, 0.0]], dtype=torch.float64))
    summary = summarise_flips(rates["flip"])
    assert summary["targets"] == [0, 1]
    assert summary["targeted_flip_rate"] == pytest.approx(1.0)
    assert summary["leakage"] == pytest.approx((1 / 3 + 0.0) / 2)
    # a perfect swap: flip 1 on the target, 0 elsewhere
    perfect = summarise_flips(torch.eye(3))
    assert perfect["targeted_flip_rate"] == 1.0 and perfect["leakage"] == 0.0 and perfect["selectivity"] == 1.0
    # swapping everything everywhere (PDAE-like): full flip but full leakage
    everything = summarise_flips(torch.ones(3, 2), targets=[0, 1, 0])
    assert everything["targeted_flip_rate"] == 1.0 and everything["leakage"] == 1.0
    assert summarise_flips(torch.ones(2, 1))["leakage"] is None
    with pytest.raises(ValueError, match="targets"):
        summarise_flips(torch.eye(2), targets=[0, 5])


@pytest.fixture(scope="module")
def easy_shapes():
    factors = _easy_factors()
    return factors, generate_shapes(300, seed=2, resolution=16, factors=factors)


def test_counterfactual_score_perfect_and_noop_swaps(easy_shapes):
    factors, ds = easy_shapes
    part = TimestepPartition(latent_dim=16, num_chunks=4)
    model = LookupModel(ds, factors, part, {"bg": 3, "size": 2, "x": 2, "pattern": 0})
    images, labels, names, _ = dataset_arrays(ds)
    ranges = [(0, 250), (250, 500), (500, 750), (750, 1000)]
    result = counterfactual_score(model.swap, model, images, labels, ranges, names, num_pairs=80, batch_size=32)
    expected = torch.tensor([[0, 0, 0, 1], [0, 0, 1, 0], [0, 0, 1, 0], [1, 0, 0, 0]], dtype=torch.float64)
    torch.testing.assert_close(result.flip, expected)
    torch.testing.assert_close(result.stay, 1 - expected)
    assert result.summary["targeted_flip_rate"] == 1.0 and result.summary["leakage"] == 0.0
    assert result.to_dict()["targets"] == {"bg": [750, 1000], "size": [500, 750], "x": [500, 750], "pattern": [0, 250]}

    def noop(source, target, ranges):
        return (source / 2 + 0.5)[:, None].expand(-1, len(ranges), -1, -1, -1)

    still = counterfactual_score(noop, model, images, labels, ranges, names, num_pairs=40)
    assert still.flip.max() == 0.0 and still.stay.min() == 1.0
    with pytest.raises(ValueError, match="swap_fn"):
        counterfactual_score(lambda a, b, r: a, model, images, labels, ranges, names, num_pairs=4)


def test_oracle_learns_easy_factors(easy_shapes):
    _, ds = easy_shapes
    images, labels, _, num_classes = dataset_arrays(ds)
    oracle, val_acc = train_oracle(images[:220], labels[:220], num_classes, images[220:], labels[220:], epochs=6)
    assert min(val_acc) > 0.9
    assert oracle.predict(images[220:]).shape == (80, 4)


def test_attribute_loss_curve_with_a_ddpm_that_forgets_each_factor_at_a_known_time():
    from diti_hf.evaluation import attribute_loss_curve

    alphas = torch.cumprod(1 - torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64), 0)
    forget_at = [200, 450, 10_000]  # channel c is destroyed from t >= forget_at[c]; channel 2 never

    def eps_fn(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        # returns the ε̂ whose x̂_0 is ±0.5 per channel (sign of the channel mean, reliable for t <= 500 at 32×32),
        # or 0 for a forgotten channel
        a = alphas[t[0]].float()
        x0 = 0.5 * torch.sign(x_t.mean((2, 3), keepdim=True)).expand_as(x_t).clone()
        for c, t_c in enumerate(forget_at):
            if int(t[0]) >= t_c:
                x0[:, c] = 0.0
        return (x_t - a.sqrt() * x0) / (1 - a).sqrt()

    class ChannelOracle:
        def predict(self, images: torch.Tensor) -> torch.Tensor:
            return (images.mean((2, 3)) > 0.1).long()  # a margin: a forgotten channel (≈ 0) reads class 0

    labels = torch.randint(0, 2, (64, 3), generator=torch.Generator().manual_seed(0))
    images = (labels.float() - 0.5)[:, :, None, None].expand(-1, -1, 32, 32)
    curve = attribute_loss_curve(eps_fn, ChannelOracle(), images, labels, alphas, range(0, 600, 100), batch_size=16)
    assert curve["loss_time"] == [200, 500, None]
    assert curve["clean_accuracy"].tolist() == [1.0, 1.0, 1.0]
    assert curve["accuracy"][0, :2].tolist() == [1.0, 1.0] and curve["accuracy"][2].min() == 1.0
    # a forgotten channel reads as class 0: accuracy = share of class-0 labels
    assert float(curve["accuracy"][0, 2]) == pytest.approx(float((labels[:, 0] == 0).double().mean()))
    with pytest.raises(ValueError, match="increasing"):
        attribute_loss_curve(eps_fn, ChannelOracle(), images, labels, alphas, [100, 0])


# ------------------------------------------------------------------------------------------------ reconstruction
def test_reconstruction_metrics_known_values():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 16, 16, generator=g) * 0.8
    assert mse(x, x).tolist() == [0.0, 0.0]
    assert torch.isinf(psnr(x, x)).all()
    assert ssim(x, x).tolist() == pytest.approx([1.0, 1.0])
    assert mse(x, x + 0.1).tolist() == pytest.approx([0.01, 0.01])
    assert psnr(x, x + 0.1).tolist() == pytest.approx([20.0, 20.0])
    # constant images a, b: SSIM = (2ab + C1) / (a² + b² + C1) (contrast/structure terms are C2/C2 = 1)
    a, b, c1 = 0.2, 0.6, 0.01**2
    const = ssim(torch.full((1, 1, 12, 12), a), torch.full((1, 1, 12, 12), b))
    assert float(const) == pytest.approx((2 * a * b + c1) / (a * a + b * b + c1))
    assert float(ssim(x[:1], 1 - x[:1])) < 0.0  # anti-correlated structure
    identity = reconstruction_metrics(lambda im: im / 2 + 0.5, x * 2 - 1, batch_size=1, num_inference_steps=5)
    assert identity["mse"] == 0.0 and identity["ssim"] == pytest.approx(1.0) and identity["psnr"] == math.inf
    assert identity["num_images"] == 2 and identity["num_inference_steps"] == 5
    with pytest.raises(ValueError, match="same shape|one shape"):
        mse(x, x[:, :2])
    with pytest.raises(ValueError, match="reconstruct_fn"):
        reconstruction_metrics(lambda im: im[:, :1], x)


# ------------------------------------------------------------------------------------------------ protocols
def _celeba_like(n: int, seed: int) -> datasets.Dataset:
    """178×218 images whose 128×128 crop at (57, 25) holds a 4×4 grid of coloured blocks; attribute j is
    'block value j > 0.5' (the 48 block/channel values, first 40), stored as ±1 like CelebA."""
    rng = np.random.default_rng(seed)
    rows = {"image": [], **{a: [] for a in CELEBA_ATTRIBUTES}}
    for _ in range(n):
        img = rng.integers(0, 256, (218, 178, 3), dtype=np.uint8)  # noise outside the crop
        # block values away from the 0.5 threshold: a margin a linear probe on 120 images can find
        blocks = rng.choice([0.25, 0.75], (4, 4, 3)) + rng.uniform(-0.1, 0.1, (4, 4, 3))
        img[57 : 57 + 128, 25 : 25 + 128] = np.kron(blocks, np.ones((32, 32, 1))) * 255
        rows["image"].append(Image.fromarray(img))
        values = blocks.transpose(2, 0, 1).reshape(-1)[:40]
        for a, v in zip(CELEBA_ATTRIBUTES, values):
            rows[a].append(1 if v > 0.5 else -1)
    return datasets.Dataset.from_dict(rows)


def _block_encoder(images: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.adaptive_avg_pool2d(images, 4).flatten(1)  # (B, 3·16), channel-major


def test_celeba_protocol_on_tiny_dataset():
    dd = datasets.DatasetDict(
        {"train": _celeba_like(120, 0), "validation": _celeba_like(30, 1), "test": _celeba_like(30, 2)}
    )
    config = ProbeConfig(epochs=30, lr=0.05, batch_size=16, selection="joint")
    report = celeba_protocol(_block_encoder, dd, config=config, batch_size=64)
    assert report["num_attributes"] == 40 and report["splits"] == {"train": 120, "val": 30, "test": 30}
    assert set(report["average_precision"]) == set(CELEBA_ATTRIBUTES)
    assert report["mean_average_precision"] > 0.97
    # without the crop box the features no longer line up with the attributes
    no_crop = celeba_protocol(_block_encoder, dd, schema=CELEBA_SCHEMA.with_columns({}, crop=None), config=config)
    assert no_crop["mean_average_precision"] < report["mean_average_precision"] - 0.1


def test_lfw_protocol_on_tiny_dataset_with_column_mapping():
    rng = np.random.default_rng(0)
    n = 150
    images = rng.random((n, 4, 4, 3))
    mixing = rng.normal(size=(48, 73))
    scores = images.transpose(0, 3, 1, 2).reshape(n, 48) @ mixing / 4
    rows = {"img": [Image.fromarray((np.kron(im, np.ones((16, 16, 1))) * 255).astype(np.uint8)) for im in images]}
    columns = {a: f"attr_{i}" for i, a in enumerate(LFW_ATTRIBUTES)}
    for i, a in enumerate(LFW_ATTRIBUTES):
        rows[columns[a]] = scores[:, i].tolist()
    ds = datasets.Dataset.from_dict(rows)  # one split only: val/test are carved out of it
    schema = LFW_SCHEMA.with_columns(columns, image_column="img")
    report = lfw_protocol(
        lambda x: _block_encoder(x * 0.5 + 0.5),
        ds,
        schema=schema,
        config=ProbeConfig(epochs=60, lr=0.02, batch_size=16),
    )
    assert len(LFW_ATTRIBUTES) == 73 and report["num_attributes"] == 73
    assert report["splits"] == {"train": 120, "val": 15, "test": 15}
    assert report["mean_pearson_r"] > 0.95
    assert report["mean_mse"] < 0.1 * float(np.var(scores))
    # the same data with all attributes in one sequence column
    seq = datasets.Dataset.from_dict({"image": rows["img"], "attributes": scores.tolist()})
    splits = load_attribute_splits(seq, LFW_SCHEMA.with_columns({}, attributes_column="attributes"))
    assert sorted(splits) == ["test", "train", "val"]
    assert len(set(splits["train"]["attributes"][0]) & set()) == 0 and len(splits["test"]) == 15
    with pytest.raises(ValueError, match="lacks the columns"):
        load_attribute_splits(ds, LFW_SCHEMA)


def test_schemas():
    assert len(CELEBA_ATTRIBUTES) == 40 and CELEBA_SCHEMA.crop == (57, 25, 128, 128)
    assert CELEBA_SCHEMA.read_labels({a: (-1 if i % 2 else 1) for i, a in enumerate(CELEBA_ATTRIBUTES)})[:3] == [
        1.0,
        0.0,
        1.0,
    ]
    assert CELEBA_SCHEMA.with_columns({"Male": "is_male"}).column("Male") == "is_male"
    with pytest.raises(ValueError, match="unknown attributes"):
        CELEBA_SCHEMA.with_columns({"Tall": "tall"})
    with pytest.raises(ValueError, match="label_kind"):
        AttributeSchema("x", ("a",), "ordinal")


# ------------------------------------------------------------------------------------------------ the suite
def test_evaluate_pipeline_on_a_perfectly_modular_model(easy_shapes, tmp_path):
    factors, ds = easy_shapes
    part = TimestepPartition(latent_dim=16, num_chunks=4)
    model = LookupModel(ds, factors, part, {"bg": 3, "x": 2, "size": 1, "pattern": 0})
    config = EvaluationConfig(
        probe=ProbeConfig(epochs=10, lr=0.05),
        num_swap_pairs=48,
        num_reconstruction_images=8,
        pixel_baseline=True,
        granularity_pairs=64,
    )
    report = evaluate_pipeline({"modular": model.functions()}, ds, config, output_dir=tmp_path, oracle=model)
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["models"].keys() == {"modular", "pixels"}  # no encoder → no random-init baseline
    assert sorted(saved["plots"]) == ["alignment_modular.png", "counterfactual_modular.png", "probes.png"]
    assert all((tmp_path / p).stat().st_size > 1000 for p in saved["plots"])
    entry = report["models"]["modular"]
    assert min(entry["probe"]["accuracy"].values()) == 1.0
    assert entry["alignment"]["decodable_chunk"] == {"bg": 3, "x": 2, "size": 1, "pattern": 0}
    # measured granularities: background > position > scale > texture, the chunk order of this model
    grans = {f["name"]: f["granularity"] for f in report["dataset"]["factors"]}
    assert grans["pattern"] < grans["size"] < grans["x"] < grans["bg"]
    assert entry["alignment"]["spearman_timestep_vs_granularity"] == pytest.approx(1.0)
    cf = entry["counterfactual"]
    assert cf["targeted_flip_rate"] == 1.0 and cf["leakage"] == 0.0
    assert entry["reconstruction"]["mse"] == 0.0 and entry["reconstruction"]["psnr"] is None  # inf → null
    assert entry["reconstruction"]["oracle_accuracy"] == dict.fromkeys(("bg", "size", "x", "pattern"), 1.0)
    assert report["oracle"]["test_accuracy"]["bg"] == 1.0
    weak = sorted(n for n, acc in report["oracle"]["test_accuracy"].items() if acc < 0.95)
    assert report["oracle"]["weak_factors"] == weak
    targets = report["targets"]["modular"]  # no single-chunk model in the run: no probe comparison
    assert targets["all_met"] is True and targets["swaps_met"] == 4 and "probe" not in targets
    assert targets["swaps"]["bg"] == {
        "range": cf["ranges"][cf["ranges"].index(cf["targets"]["bg"])],
        "flip": 1.0,
        "worst_other_factor": targets["swaps"]["bg"]["worst_other_factor"],
        "worst_other_change": 0.0,
        "met": True,
    }


def test_evaluate_pipeline_with_tiny_diti_and_pdae_pipelines(tmp_path):
    from conftest import tiny_pipeline

    ds = generate_shapes(90, seed=4, resolution=16, factors=_easy_factors()[:2])
    config = EvaluationConfig(
        probe=ProbeConfig(epochs=3),
        num_swap_ranges=2,
        num_swap_pairs=4,
        swap_batch_size=4,
        oracle_epochs=1,
        num_reconstruction_images=4,
        num_inference_steps=2,
        granularity_pairs=16,
        num_attribute_loss_images=8,
        attribute_loss_timesteps=[0, 500],
        num_loss_profile_images=8,
        regeneration_timesteps=[500, 999],
        num_regeneration_images=4,
        num_validity_samples=4,
        num_sample_steps=2,
        plots=False,
    )
    models = {"diti": tiny_pipeline(num_chunks=4), "pdae": tiny_pipeline(seed=1, num_chunks=1)}
    report = evaluate_pipeline(models, ds, config, output_dir=tmp_path)
    assert report["models"].keys() == {"diti", "pdae", "random_init", "pixels"}
    diti, pdae = report["models"]["diti"], report["models"]["pdae"]
    assert diti["num_chunks"] == 4 and pdae["num_chunks"] == 1 and pdae["alignment"] is None
    assert len(diti["alignment"]["prefix_accuracy"][0]) == 4
    assert report["models"]["random_init"]["alignment"] is not None
    assert report["models"]["pixels"]["feature_dim"] == 3 * 16 * 16
    for entry in (diti, pdae):
        assert np.asarray(entry["counterfactual"]["flip_rate"]).shape == (2, 2)
        assert entry["counterfactual"]["ranges"] == [[0, 500], [500, 1000]]
        assert 0.0 <= entry["reconstruction"]["ssim"] <= 1.0 and entry["reconstruction"]["mse"] > 0
        assert all(0.0 <= v <= 1.0 for v in entry["probe"]["accuracy"].values())
    # PDAE's ranges cover the same (single) chunk: identical swaps, identical flip rates
    loss = report["attribute_loss"]
    assert loss["ddpm_of"] == "diti" and set(loss["loss_time"]) == {"bg", "size"}
    assert len(loss["accuracy"]["bg"]) == len(config.attribute_loss_timesteps)
    pdae_flip = np.asarray(pdae["counterfactual"]["flip_rate"], dtype=float)
    np.testing.assert_array_equal(pdae_flip[:, 0], pdae_flip[:, 1])
    assert json.loads((tmp_path / "report.json").read_text())["dataset"]["num_images"] == 90
    targets = report["targets"]
    assert set(targets) == {"diti"}  # random_init is a baseline, pdae has one chunk
    probe = targets["diti"]["probe"]
    assert probe["baseline"] == "pdae"
    assert probe["met"] == (diti["probe"]["mean_accuracy"] >= pdae["probe"]["mean_accuracy"])
    control = targets["diti"]["clean_control"]
    assert set(control["by_factor"]) == {"bg", "size"} and len(control["by_range"]) == 2
    assert control["met"] == (control["count"] >= 4 and control["disjoint_groups"])
    # the generation-control diagnostics
    profile = report["loss_profile"]
    assert profile["ddpm_of"] == "diti" and len(profile["timesteps"]) == len(profile["weighted_eps_error"]) == 25
    auto = TimestepPartition.from_dict(profile["auto_partition"])
    assert auto.latent_dim == 16 and auto.num_chunks == 4 and auto.stages[-1] == 1000
    samples = report["ddpm_samples"]
    assert samples["num_samples"] == 4 and 0.0 <= samples["valid_fraction"] <= 1.0
    assert set(samples["factors"]) == {"bg", "size"}
    for entry in (diti, pdae):
        regen = entry["regeneration"]
        assert regen["timesteps"] == [500, 999] and len(regen["keep_own"]["bg"]) == 2
        protocols = entry["swap_protocols"]
        assert protocols["default"] == "source_inverted"
        assert set(protocols["scores"]) == {"source_inverted", "target_inverted", "shared_random", "stochastic"}
        assert protocols["scores"]["source_inverted"] == entry["counterfactual"]


def test_pipeline_adapter_matches_the_pipeline():
    from conftest import tiny_images, tiny_pipeline
    from diti_hf.evaluation import pipeline_functions

    pipe = tiny_pipeline(num_chunks=4)
    fns = pipeline_functions(pipe, num_inference_steps=2)
    a, b = tiny_images(2, seed=0), tiny_images(2, seed=1)
    torch.testing.assert_close(fns.encode_fn(a), pipe.encode(a).z)
    assert fns.partition.num_chunks == 4 and fns.sample_size == 16
    ranges = [(0, 500), (500, 1000), (0, 250)]
    swapped = fns.swap_fn(a, b, ranges)
    assert swapped.shape == (2, 3, 3, 16, 16) and 0.0 <= float(swapped.min()) <= float(swapped.max()) <= 1.0
    direct = pipe.swap(a, b, timesteps=ranges, num_inference_steps=2, output_type="pt").images.view(2, 3, 3, 16, 16)
    torch.testing.assert_close(swapped, direct)
    with pytest.raises(TypeError, match="DiTiPipeline-like"):
        pipeline_functions(object())


def test_evaluate_pipeline_bad_inputs(easy_shapes):
    _, ds = easy_shapes
    fn = ModelFunctions(lambda x: x.flatten(1), sample_size=32)
    with pytest.raises(ValueError, match="expects 32"):
        evaluate_pipeline({"m": fn}, ds, EvaluationConfig(pixel_baseline=False))
    with pytest.raises(ValueError, match="reserved"):
        evaluate_pipeline({"pixels": ModelFunctions(lambda x: x.flatten(1))}, ds)
    with pytest.raises(ValueError, match="ClassLabel"):
        evaluate_pipeline({"m": ModelFunctions(lambda x: x.flatten(1))}, ds, factors=["nope"])
    with pytest.raises(TypeError, match="DiTiPipeline"):
        evaluate_pipeline({"m": object()}, ds)
    with pytest.raises(ValueError, match="swap_ranges"):
        EvaluationConfig(swap_ranges=[(500, 100)])


# ------------------------------------------------------------------------------------------------ the script
def _load_example():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).parents[1] / "examples" / "evaluate.py"
    spec = importlib.util.spec_from_file_location("evaluate_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_evaluate_script_end_to_end(tmp_path):
    from conftest import tiny_pipeline

    tiny_pipeline(num_chunks=4).save_pretrained(tmp_path / "diti")
    example = _load_example()
    args = example.parse_args(
        [
            "--model", f"diti={tmp_path / 'diti'}", "--output_dir", str(tmp_path / "eval"), "--device", "cpu",
            "--num_images", "60", "--probe_epochs", "2", "--num_inference_steps", "2",
            "--timesteps", "0", "500", "--timesteps", "500", "1000",
            "--num_swap_pairs", "2", "--oracle_epochs", "1", "--num_reconstruction_images", "2", "--no_plots",
            "--num_attribute_loss_images", "4",
        ]
    )  # fmt: skip
    assert args.models == {"diti": str(tmp_path / "diti")}
    report = example.main(args)
    saved = json.loads((tmp_path / "eval" / "report.json").read_text())
    assert saved["dataset"]["name"] == "diti-shapes" and saved["dataset"]["resolution"] == 16
    assert saved["models"].keys() == report["models"].keys() == {"diti", "random_init", "pixels"}
    assert saved["models"]["diti"]["counterfactual"]["ranges"] == [[0, 500], [500, 1000]]
    assert len(saved["models"]["diti"]["probe"]["accuracy"]) == 7  # the default factors
    assert len(saved["dataset"]["factor_specs"]) == 7 and saved["dataset"]["seed"] == 0
    assert set(saved["attribute_loss"]["loss_time"]) == {f["name"] for f in saved["dataset"]["factors"]}


@pytest.mark.parametrize(
    "argv, match",
    [
        (["--model", "diti", "--output_dir", "x"], "NAME=PATH"),
        (["--model", "pixels=a", "--output_dir", "x"], "reserved"),
        (["--model", "a=b", "--output_dir", "x", "--protocol", "celeba"], "needs --dataset"),
        (["--model", "a=b", "--output_dir", "x", "--num_swap_pairs", "0"], "num_swap_pairs"),
        (["--model", "a=b", "--output_dir", "x", "--columns", "[1]"], "JSON object"),
    ],
)
def test_evaluate_script_bad_flags(argv, match, capsys):
    example = _load_example()
    with pytest.raises(SystemExit) as exit_info:
        example.parse_args(argv)
    assert exit_info.value.code == 2
    assert match in capsys.readouterr().err


def _without_times(value):
    """The report without its wall-clock times (the only part two identical runs differ in)."""
    if isinstance(value, dict):
        return {k: _without_times(v) for k, v in value.items() if "seconds" not in k}
    if isinstance(value, list):
        return [_without_times(v) for v in value]
    return value


def test_cli_and_script_are_one_run(tmp_path):
    """`diti-hf evaluate` and examples/evaluate.py both call `run_benchmark`: the same flags, spelt each front end's
    way, give the same report (keys and numbers), diagnostics included."""
    from conftest import tiny_pipeline
    from diti_hf.cli import main as cli_main

    tiny_pipeline(num_chunks=4).save_pretrained(tmp_path / "diti")
    model = str(tmp_path / "diti")
    cli = [
        "evaluate", "--model", model, "--output-dir", str(tmp_path / "cli"), "--num-images", "48",
        "--probe-epochs", "2", "--steps", "2", "--timesteps", "0", "500", "--timesteps", "500", "1000",
        "--swap-pairs", "2", "--oracle-epochs", "1", "--reconstruction-images", "2", "--attribute-loss-images", "4",
        "--regeneration-images", "2", "--regeneration-timesteps", "500", "--validity-samples", "2",
        "--sample-steps", "2", "--swap-protocols", "shared_random", "--batch-size", "8", "--no-plots", "--no-progress",
        "--threads", "1",
    ]  # fmt: skip
    script = [
        "--model", f"model={model}", "--output_dir", str(tmp_path / "script"), "--device", "cpu", "--num_images", "48",
        "--probe_epochs", "2", "--num_inference_steps", "2", "--timesteps", "0", "500", "--timesteps", "500", "1000",
        "--num_swap_pairs", "2", "--oracle_epochs", "1", "--num_reconstruction_images", "2",
        "--num_attribute_loss_images", "4", "--num_regeneration_images", "2", "--regeneration_timesteps", "500",
        "--num_validity_samples", "2", "--num_sample_steps", "2", "--swap_protocols", "shared_random", "--batch_size", "8",
        "--no_plots",
    ]  # fmt: skip
    assert cli_main(cli) == 0
    example = _load_example()
    returned = example.main(example.parse_args(script))
    by_cli, by_script = (json.loads((tmp_path / d / "report.json").read_text()) for d in ("cli", "script"))
    assert by_script == json.loads(json.dumps(returned))
    assert by_cli["models"].keys() == {"model", "random_init", "pixels"}
    for key in ("attribute_loss", "loss_profile", "ddpm_samples", "oracle"):
        assert key in by_cli, key
    assert by_cli["models"]["model"]["counterfactual"]["ranges"] == [[0, 500], [500, 1000]]
    assert by_cli["config"]["encode_batch_size"] == by_cli["config"]["swap_batch_size"] == 8
    assert _without_times(by_cli) == _without_times(by_script)


def test_evaluate_pipeline_is_deterministic_under_the_seed(easy_shapes):
    factors, ds = easy_shapes
    part = TimestepPartition(latent_dim=16, num_chunks=4)
    model = LookupModel(ds, factors, part, {"bg": 3, "x": 2, "size": 1, "pattern": 0})
    config = EvaluationConfig(
        probe=ProbeConfig(epochs=3), num_swap_pairs=8, oracle_epochs=1, num_reconstruction_images=4, plots=False
    )
    first, second = (evaluate_pipeline({"m": model.functions()}, ds, config) for _ in range(2))
    for key in ("probe", "alignment", "counterfactual", "reconstruction"):
        a, b = first["models"]["m"][key], second["models"]["m"][key]
        a.pop("seconds", None), b.pop("seconds", None)
        assert a == b
    assert first["oracle"]["val_accuracy"] == second["oracle"]["val_accuracy"]


def _targets_report(flip, stay, spearman, acc, baseline_acc):
    counterfactual = {
        "factors": ["coarse", "fine"],
        "ranges": [[0, 500], [500, 1000]],
        "flip_rate": flip,
        "stay_rate": stay,
    }
    return {
        "models": {
            "diti": {"alignment": {"spearman_timestep_vs_granularity": spearman}, "counterfactual": counterfactual,
                     "probe": {"mean_accuracy": acc}},
            "pdae": {"probe": {"mean_accuracy": baseline_acc}},
        }
    }  # fmt: skip


def test_check_targets_hand_computed():
    from diti_hf.evaluation import Targets, check_targets

    # coarse: range 1 flips it 0.95 but moves fine 40% → the check takes range 0 (flip 0.75, fine changes 10%)
    # fine: range 0 flips it 0.9 while coarse changes 0.25 there; range 1 flips it 0.5 → no range passes, the
    # report shows the range that flips it most
    flip = [[0.75, 0.95], [0.9, 0.5]]
    stay = [[0.75, 0.05], [0.9, 0.6]]  # change rate = 1 − stay
    result = check_targets(_targets_report(flip, stay, 0.85, 0.8, 0.7), "diti", baseline="pdae")
    assert result["alignment"] == {"spearman": 0.85, "met": True}
    coarse, fine = result["swaps"]["coarse"], result["swaps"]["fine"]
    assert coarse["range"] == [0, 500] and coarse["flip"] == 0.75 and coarse["met"] is True
    assert coarse["worst_other_factor"] == "fine" and coarse["worst_other_change"] == pytest.approx(0.1)
    assert fine["met"] is False and result["swaps_met"] == 1
    assert fine["range"] == [0, 500] and fine["flip"] == 0.9 and fine["worst_other_change"] == pytest.approx(0.25)
    assert result["probe"]["met"] is True and result["all_met"] is False
    # stricter bars flip the verdicts; a missing alignment gives None, not a pass
    strict = check_targets(_targets_report(flip, stay, 0.85, 0.8, 0.7), "diti", "pdae", Targets(min_spearman=0.9))
    assert strict["alignment"]["met"] is False
    missing = check_targets(_targets_report(flip, stay, None, 0.6, 0.7), "diti", baseline="pdae")
    assert missing["alignment"]["met"] is None and missing["probe"]["met"] is False and missing["all_met"] is None
    with pytest.raises(ValueError, match="'nope'"):
        check_targets(_targets_report(flip, stay, 0.85, 0.8, 0.7), "nope")


def test_evaluate_reads_a_shapes3d_schema_dataset_and_writes_the_disentanglement_metrics(tmp_path):
    """Numeric factor columns (Shapes3D's layout: floats with few values, an int column) are labelled and the report
    carries DCI / MIG / SAP / FactorVAE for the model and the random encoder, and the importance per time-step group."""
    import datasets

    from conftest import tiny_pipeline
    from diti_hf.cli import main as cli_main
    from diti_hf.data.shapes import generate_shapes

    tiny_pipeline(num_chunks=4).save_pretrained(tmp_path / "diti")
    shapes = generate_shapes(48, seed=5, resolution=16)
    columns = {
        "image": shapes["image"],
        "floor_hue": [v / 10 for v in shapes["background"]],
        "object_hue": [v / 10 for v in shapes["object_color"]],
        "scale": [0.75 + 0.25 * v / 7 for v in shapes["scale"]],
        "shape": shapes["shape"],
        "orientation": [float(i % 30) for i in range(48)],  # 30 values: binned
    }
    folder = tmp_path / "shapes3d"
    datasets.Dataset.from_dict(columns, features=datasets.Features(
        {"image": datasets.Image(), **{n: datasets.Value("int64" if n == "shape" else "float32") for n in columns if n != "image"}}
    )).save_to_disk(str(folder))  # fmt: skip
    argv = [
        "evaluate", "--model", str(tmp_path / "diti"), "--dataset", str(folder), "--factor-columns", "floor_hue",
        "object_hue", "scale", "shape", "orientation", "--num-images", "48", "--probe-epochs", "1", "--no-counterfactual",
        "--no-reconstruction", "--no-regeneration", "--no-sample-validity", "--no-loss-profile", "--no-attribute-loss",
        "--disentanglement-images", "40", "--output-dir", str(tmp_path / "out"), "--no-plots", "--no-progress",
    ]  # fmt: skip
    assert cli_main(argv) == 0
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    labels = {f["name"]: f["labels"] for f in report["dataset"]["factors"]}
    assert labels["shape"].endswith("distinct values") and labels["orientation"].startswith("20 equal-width bins")
    for name in ("model", "random_init", "pixels"):
        scores = report["models"][name]["disentanglement"]
        assert scores["num_images"] == 40
        for key in ("dci_disentanglement", "dci_completeness", "dci_informativeness", "mig", "sap", "factor_vae"):
            assert 0.0 <= scores[key] <= 1.0, (name, key)
    pixels = report["models"]["pixels"]["disentanglement"]
    # More pixels than disentanglement_max_dim: projected on at most 64 principal components of the 40 images.
    assert pixels["input_dims"] > 512 and pixels["pca_components"] == 40
    assert "pca_components" not in report["models"]["model"]["disentanglement"]
    groups = report["models"]["model"]["disentanglement"]["by_timestep_group"]
    assert groups["groups"] == [[0, 250], [250, 500], [500, 750], [750, 1000]] and groups["dims"][0] == [0, 4]
    share = np.asarray(groups["importance_share"])
    assert share.shape == (4, 5) and np.allclose(share.sum(axis=0)[share.sum(axis=0) > 0], 1.0)

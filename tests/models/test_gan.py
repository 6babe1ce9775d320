"""GAN, cGAN and Pix2Pix models: shapes, configs, losses that train, checkpoints that round-trip."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from latentwatch.errors import InvalidInput
from latentwatch.families import family
from latentwatch.models.checkpoint import CheckpointError
from latentwatch.models.gan import GAN, GANConfig, gan_losses
from latentwatch.models.gan_checkpoint import REQUIRED_KEYS, load_gan_checkpoint
from latentwatch.models.gan_training import GANTrainConfig, run_gan_training
from latentwatch.models.pix2pix import Pix2Pix, Pix2PixConfig, pix2pix_losses
from latentwatch.models.run_dir import CHECKPOINT_FILE, sample_grid_path

TINY = {"data": "digits", "epochs": 2, "max_rows": 160, "batch_size": 32, "progress": False}


@pytest.mark.parametrize(("shape", "kind"), [((1, 8, 8), "gan"), ((1, 28, 28), "cgan"),
                                              (None, "gan"), (None, "cgan")])
def test_generator_and_discriminator_shapes(shape: tuple[int, int, int] | None,
                                            kind: str) -> None:
    n_features = 64 if shape == (1, 8, 8) else 784 if shape else 5
    config = GANConfig(kind=kind, n_features=n_features, image_shape=shape, latent_dim=6,
                       hidden=(8, 16), n_classes=3 if kind == "cgan" else None)
    model = GAN(config)
    labels = torch.tensor([0, 2, 1, 1]) if kind == "cgan" else None
    out = model.generator(torch.randn(4, 6), labels)
    assert out.shape == (4, *(shape or (n_features,)))
    assert 0.0 <= float(out.detach().min()) <= float(out.detach().max()) <= 1.0  # [0, 1]
    assert model.discriminator(out, labels).shape == (4,)
    if kind == "cgan":
        with pytest.raises(ValueError, match="needs labels"):
            model.generator(torch.randn(4, 6))
        # The label changes the sample: it is embedded, not ignored.
        z = torch.randn(1, 6).repeat(3, 1)
        model.eval()
        three = model.generator(z, torch.tensor([0, 1, 2]))
        assert not torch.allclose(three[0], three[1])


@pytest.mark.parametrize(("shape", "patches"), [((1, 8, 8), (2, 2)), ((1, 28, 28), (12, 12))])
def test_pix2pix_shapes(shape: tuple[int, int, int], patches: tuple[int, int]) -> None:
    model = Pix2Pix(Pix2PixConfig(image_shape=shape, channels=4))
    sketch = torch.rand(3, *shape)
    out = model.generator(sketch)
    assert out.shape == sketch.shape
    assert 0.0 <= float(out.detach().min()) <= float(out.detach().max()) <= 1.0
    assert model.discriminator(sketch, out).shape == (3, *patches)
    # Dropout is live in train mode only: eval translations are deterministic.
    model.eval()
    assert torch.equal(model.generator(sketch), model.generator(sketch))


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"kind": "vae", "n_features": 4}, "GANConfig takes kind 'gan' or 'cgan'"),
        ({"kind": "cgan", "n_features": 4}, "n_classes is required"),
        ({"kind": "gan", "n_features": 4, "n_classes": 3}, "n_classes is only for cgan"),
        ({"kind": "gan", "n_features": 100, "image_shape": (1, 10, 10)}, "divisible by 4"),
        ({"kind": "gan", "n_features": 4, "real_label": 0.4}, "real_label"),
        ({"kind": "cgan", "n_features": 4, "n_classes": 3, "class_loss_weight": -1},
         "class_loss_weight"),
    ],
)
def test_bad_gan_configs_say_what_is_wrong(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        GANConfig(**kwargs)


def test_the_families_name_these_parts() -> None:
    from latentwatch.families import resolve

    for kind, model_class in (("gan", GAN), ("cgan", GAN), ("pix2pix", Pix2Pix)):
        fam = family(kind)
        assert resolve(fam.model_class) is model_class and fam.adversarial and not fam.scores
    assert resolve(family("gan").loss) is gan_losses
    assert resolve(family("pix2pix").loss) is pix2pix_losses
    assert family("cgan").conditional and not family("gan").conditional
    assert family("pix2pix").capabilities == ("translate",)


def _train_part(model: GAN | Pix2Pix, part: str, steps: int) -> list[tuple[float, float]]:
    """`steps` Adam steps on `part` alone (the other frozen); (loss, D(fake) as a probability)
    before each step and after the last."""
    torch.manual_seed(0)
    real = torch.rand(32, 1, 8, 8).round()  # binary blobs: easy to tell from a random G
    cond = torch.rand(32, 1, 8, 8) if isinstance(model, Pix2Pix) else None
    losses = pix2pix_losses if isinstance(model, Pix2Pix) else gan_losses
    net = model.discriminator if part == "discriminator" else model.generator
    opt = torch.optim.Adam(net.parameters(), lr=2e-3, betas=(0.5, 0.999))
    z = torch.randn(32, 6)
    history = []
    for _ in range(steps + 1):
        fake = model.generator(cond) if isinstance(model, Pix2Pix) else model.generator(z)
        loss = losses(model, real, fake, cond, part)  # type: ignore[arg-type]
        with torch.no_grad():
            logits = (model.discriminator(cond, fake) if isinstance(model, Pix2Pix)
                      else model.discriminator(fake))
        history.append((float(loss.detach()), float(torch.sigmoid(logits).mean())))
        opt.zero_grad()
        loss.backward()
        opt.step()
    return history


@pytest.mark.parametrize("part", ["discriminator", "generator"])
@pytest.mark.parametrize("kind", ["gan", "pix2pix"])
def test_each_part_lowers_its_loss_in_the_right_direction(kind: str, part: str) -> None:
    """D steps make D doubt the fakes; G steps, against a D that has learnt, make D believe
    them (a loss with the wrong sign would lower itself the other way)."""
    model: GAN | Pix2Pix = (GAN(GANConfig(kind="gan", n_features=64, image_shape=(1, 8, 8),
                                          latent_dim=6, hidden=(8, 16)))
                            if kind == "gan" else Pix2Pix(Pix2PixConfig((1, 8, 8), channels=8)))
    if part == "generator":
        _train_part(model, "discriminator", steps=30)
    (loss_before, fooled_before), *_, (loss_after, fooled_after) = _train_part(model, part, 30)
    assert loss_after < 0.9 * loss_before, f"{kind} {part}: {loss_before:.3f} -> {loss_after:.3f}"
    if part == "discriminator":
        assert fooled_after < fooled_before - 0.1, (fooled_before, fooled_after)
    else:
        assert fooled_after > fooled_before + 0.05, (fooled_before, fooled_after)


def _cgan(class_loss_weight: float) -> GAN:
    torch.manual_seed(0)
    return GAN(GANConfig(kind="cgan", n_features=64, image_shape=(1, 8, 8), latent_dim=6,
                         hidden=(8, 16), n_classes=3, class_loss_weight=class_loss_weight))


def test_the_cgan_class_head_learns_the_classes_of_real_images() -> None:
    """D's class loss teaches its head the label of real images (AC-GAN); without the weight
    there is no head and the loss is the plain adversarial one."""
    model = _cgan(1.0)
    assert model.discriminator.classifier is not None
    assert "auxiliary classification loss (weight 1)" in model.config.stabilisation
    assert _cgan(0.0).discriminator.classifier is None
    # Three classes of images that differ in their brightness.
    labels = torch.arange(3).repeat(16)
    real = (labels.float()[:, None, None, None] / 2 + 0.1 * torch.rand(48, 1, 8, 8)).clamp(0, 1)
    opt = torch.optim.Adam(model.discriminator.parameters(), lr=1e-2)
    for _ in range(60):
        fake = model.generator(model.prior(48), labels)
        loss = gan_losses(model, real, fake, labels, "discriminator")
        opt.zero_grad()
        loss.backward()
        opt.step()
    _, classes = model.discriminator.scores(real, labels)
    assert classes is not None and (classes.argmax(1) == labels).float().mean() > 0.95


def test_the_generators_class_loss_is_the_heads_cross_entropy_on_its_samples() -> None:
    model = _cgan(2.5)
    labels = torch.tensor([0, 1, 2, 1])
    fake = model.generator(model.prior(4, torch.Generator().manual_seed(2)), labels)
    logits, classes = model.discriminator.scores(fake, labels)
    assert classes is not None
    expected = (torch.nn.functional.binary_cross_entropy_with_logits(logits, torch.ones(4))
                + 2.5 * torch.nn.functional.cross_entropy(classes, labels))
    torch.testing.assert_close(gan_losses(model, fake, fake, labels, "generator"), expected)


def test_a_cgan_checkpoint_from_before_the_class_head_still_loads(tmp_path: Path) -> None:
    result = run_gan_training(GANTrainConfig(model="cgan", out=tmp_path / "run",
                                             class_loss_weight=0.0, **TINY))
    path = result.run_dir / CHECKPOINT_FILE
    payload = torch.load(path, weights_only=True)
    del payload["config"]["class_loss_weight"]  # as written before the field existed
    torch.save(payload, path)
    model, ckpt = load_gan_checkpoint(result.run_dir)
    assert ckpt.config.class_loss_weight == 0.0 and model.discriminator.classifier is None


def test_training_is_deterministic_and_writes_the_run_directory(tmp_path: Path) -> None:
    runs = [run_gan_training(GANTrainConfig(model="cgan", out=tmp_path / name, seed=3, **TINY))
            for name in ("a", "b")]
    payloads = [torch.load(r.run_dir / CHECKPOINT_FILE, weights_only=True) for r in runs]
    assert set(REQUIRED_KEYS) <= set(payloads[0])
    for key in ("generator", "discriminator"):
        assert payloads[0][key].keys() == payloads[1][key].keys()
        assert all(torch.equal(payloads[0][key][k], payloads[1][key][k]) for k in payloads[0][key])
    assert [h["d_loss"] for h in payloads[0]["history"]] == \
        [h["d_loss"] for h in payloads[1]["history"]]
    other = run_gan_training(GANTrainConfig(model="cgan", out=tmp_path / "c", seed=4, **TINY))
    w = "project.0.weight"
    assert not torch.equal(payloads[0]["generator"][w],
                           torch.load(other.run_dir / CHECKPOINT_FILE,
                                      weights_only=True)["generator"][w])
    for epoch in (1, 2):
        assert sample_grid_path(tmp_path / "a", epoch).read_bytes().startswith(b"\x89PNG")
    assert payloads[0]["class_names"] == [str(d) for d in range(10)]
    assert payloads[0]["output_range"] == [0.0, 16.0]


@pytest.mark.parametrize("kind", ["gan", "cgan", "pix2pix"])
def test_the_checkpoint_round_trips(kind: str, tmp_path: Path) -> None:
    result = run_gan_training(GANTrainConfig(model=kind, out=tmp_path / kind, **TINY))
    model, ckpt = load_gan_checkpoint(result.run_dir)
    assert ckpt.kind == kind and ckpt.config.kind == kind and ckpt.image_shape == (1, 8, 8)
    assert not model.training and len(ckpt.history) == 2 and ckpt.stabilisation
    assert (ckpt.edge_map is not None) == (kind == "pix2pix")
    assert (ckpt.class_names is not None) == (kind == "cgan")
    # The weights give what the trained model gave: compare against a second load.
    again, _ = load_gan_checkpoint(result.run_dir / CHECKPOINT_FILE)
    if isinstance(model, Pix2Pix):
        x = torch.rand(4, 1, 8, 8)
        assert torch.equal(model.generator(x), again.generator(x))
    else:
        labels = torch.arange(4) if kind == "cgan" else None
        g = torch.Generator().manual_seed(1)
        assert torch.equal(model.sample(4, g, labels),
                           again.sample(4, torch.Generator().manual_seed(1), labels))


def test_loading_refuses_what_is_not_an_adversarial_checkpoint(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no checkpoint file"):
        load_gan_checkpoint(tmp_path)
    torch.save({"kind": "vae", "config": {}}, tmp_path / CHECKPOINT_FILE)
    with pytest.raises(CheckpointError, match="not a gan, cgan or pix2pix checkpoint"):
        load_gan_checkpoint(tmp_path)
    torch.save({"kind": "gan", "format_version": 1}, tmp_path / CHECKPOINT_FILE)
    with pytest.raises(CheckpointError, match="missing keys"):
        load_gan_checkpoint(tmp_path)


def test_adversarial_training_refuses_rows_for_pix2pix_and_unlabelled_data_for_cgan(
    tmp_path: Path,
) -> None:
    import numpy as np

    rows = tmp_path / "rows.npy"
    np.save(rows, np.random.default_rng(0).normal(size=(50, 4)).astype(np.float32))
    with pytest.raises(InvalidInput, match="needs images"):
        run_gan_training(GANTrainConfig(data=str(rows), model="pix2pix", out=tmp_path / "p"))
    with pytest.raises(InvalidInput, match="needs class labels"):
        run_gan_training(GANTrainConfig(data=str(rows), model="cgan", out=tmp_path / "c"))
    # A plain GAN trains on tabular rows (the MLP pair) and samples in the rows' range.
    result = run_gan_training(GANTrainConfig(data=str(rows), model="gan", out=tmp_path / "g",
                                             epochs=1, batch_size=16, progress=False))
    model, ckpt = load_gan_checkpoint(result.run_dir)
    assert ckpt.image_shape is None and ckpt.output_range is None
    assert model.sample(3).shape == (3, 4)
    assert not sample_grid_path(result.run_dir, 1).exists()  # rows have no picture

"""Generators end to end: GAN, cGAN, VAE samples, Pix2Pix translations and β-VAE traversals.

    python benchmarks/generators.py --images-dir DIR --json out.json
        [--quick] [--epochs N] [--cgan-epochs N] [--max-rows N] [--datasets mnist,fashion-mnist]

Per dataset (28x28 IDX files under DIR/<dataset>/): a small CNN classifier is trained here on
the real training images (its test accuracy is reported). A GAN, a cGAN and a Pix2Pix
(edge-map sketch -> image pairs, latentwatch.data.pairs) train with run_gan_training, a VAE with
latentwatch.models.training; on MNIST also β-VAEs at β 2 and 4. Everything is exported into one
repository and served by a real `latentwatch serve`; every figure below goes over gRPC.

- cGAN label share: 64 samples per class; the share the real classifier labels as asked.
- Classifier-accuracy score: a fresh classifier trained on cGAN samples only (the same count
  per class as the real training set), tested on the real test images, divided by the
  real-trained classifier's test accuracy.
- Fréchet distance (FD) on the real classifier's penultimate features (64-d), each set vs the
  real test images: real train (the floor), GAN, cGAN, VAE decoder samples (N(0, I) prior).
- Pix2Pix on the run's held-out pairs: mean |translated - true| in data units beside two
  baselines (the edge map itself, the mean training image); FD of translated vs true; the
  dropout modes measured by export/generator_graphs.py choose_dropout (eval vs train mode).
- Traversal (Traverse RPC, from the prior mean, -3..3 in 7 steps): active dimensions are those
  the server does not report inactive (a change of at least 0.01 and a tenth of the strongest
  dimension's). Beside it the active units of Burda et al. (2016): dimensions whose encoder
  mean varies across 2,000 real test images with variance above 0.01 (Encode RPC). Concentration
  of a dimension: per pixel, the mean absolute deviation of the swept images from their mean;
  the share of that total carried by the top 10% of pixels (0.10: spread evenly over the image;
  1.0: all in 78 pixels).
- Throughput: samples/s for Generate requests of 64 over gRPC vs the exported generator.onnx
  run in-process by ONNX Runtime, one thread each, one run.

One sample grid PNG per model is written beside the JSON file.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from image_features import Classifier, frechet_distance, predict, train_classifier
from numpy.typing import NDArray
from processes import start_latentwatch

from latentwatch.client.client import LatentwatchClient

logger = logging.getLogger("generators")

TRAIN_FILE, TEST_FILE = "train-images-idx3-ubyte.gz", "t10k-images-idx3-ubyte.gz"
SEED = 0
PER_CLASS = 64
REQUEST_SAMPLES = 64
CHUNK = 1024  # rows per Generate / Translate request (3 MB of 28x28 float32)
QUICK_STEPS = 300  # adversarial optimiser steps in --quick
QUICK_DATASETS = ("mnist",)
QUICK_ROWS, QUICK_VAE_EPOCHS, QUICK_CLASSIFIER_EPOCHS, QUICK_FD_SAMPLES = 2000, 5, 5, 2000
TARGETS = {"mnist": {"label_share": 0.98, "cas": 0.95}, "fashion-mnist": {"label_share": 0.90}}
BETAS = (1.0, 2.0, 4.0)
TOP_PIXEL_FRACTION = 0.10
ACTIVE_UNIT_ROWS, ACTIVE_UNIT_VARIANCE = 2000, 0.01  # Burda, Grosse & Salakhutdinov (2016)


def write_grid(path: Path, tiles: NDArray, max_value: float, columns: int) -> str:
    from latentwatch.models.sample_grid import grid_pixels
    from latentwatch.reports.charts import png_bytes

    pixels = grid_pixels(np.asarray(tiles, np.float64).reshape(-1, 28, 28) / max_value, columns)
    path.write_bytes(png_bytes(pixels))
    return path.name  # beside the JSON file


@dataclass(frozen=True)
class Split:
    X_train: NDArray
    y_train: NDArray
    X_test: NDArray
    y_test: NDArray
    max_value: float
    train_file: Path


def load_dataset(directory: Path, max_rows: int | None) -> Split:
    from latentwatch.data import load_source

    train = load_source(str(directory / TRAIN_FILE), max_rows=max_rows)
    test = load_source(str(directory / TEST_FILE))
    assert train.y is not None and test.y is not None and train.max_value is not None
    return Split(train.X, train.y, test.X, test.y, float(train.max_value),
                 directory / TRAIN_FILE)


def train_all(name: str, split: Split, repo: Path, work: Path, args: argparse.Namespace,
              max_rows: int | None) -> dict[str, Any]:
    """Train and export gan, cgan, pix2pix and vae (+ β-VAEs on MNIST); seconds per model."""
    from latentwatch.export.exporter import export_run
    from latentwatch.models.gan_training import GANTrainConfig, run_gan_training
    from latentwatch.models.training import TrainConfig, run_training

    seconds: dict[str, Any] = {}
    epochs = args.epochs
    if epochs is None and args.quick:
        n_train = 0.9 * (max_rows or len(split.X_train))
        epochs = max(1, math.ceil(QUICK_STEPS / max(1, n_train // 64)))
    for kind in ("gan", "cgan", "pix2pix"):
        start_s = time.perf_counter()
        kind_epochs = args.cgan_epochs if kind == "cgan" and args.cgan_epochs else epochs
        run_gan_training(GANTrainConfig(data=str(split.train_file), model=kind,
                                        out=work / f"run-{name}-{kind}", epochs=kind_epochs,
                                        max_rows=max_rows, seed=SEED, progress=False,
                                        sample_grids=False))
        export_run(work / f"run-{name}-{kind}", repo, f"{name}-{kind}")
        seconds[kind] = round(time.perf_counter() - start_s, 1)
    vae_epochs = args.epochs or (QUICK_VAE_EPOCHS if args.quick else None)
    for beta in BETAS if name == "mnist" else BETAS[:1]:
        kind, model = ("vae", f"{name}-vae") if beta == 1 else ("beta-vae", f"{name}-beta{beta:g}")
        start_s = time.perf_counter()
        run_training(TrainConfig(data=str(split.train_file), model=kind,  # type: ignore[arg-type]
                                 out=work / f"run-{model}", beta=None if beta == 1 else beta,
                                 epochs=vae_epochs, max_rows=max_rows, seed=SEED, progress=False))
        export_run(work / f"run-{model}", repo, model)
        seconds[model.removeprefix(f"{name}-")] = round(time.perf_counter() - start_s, 1)
    return seconds


def cgan_figures(client: LatentwatchClient, name: str, split: Split, real: Classifier,
                 real_acc: float, clf_epochs: int, out_dir: Path) -> dict[str, Any]:
    labels = np.repeat(np.arange(10), PER_CLASS)
    gen = client.generate(f"{name}-cgan", len(labels), seed=SEED, labels=labels.tolist())
    predicted, _ = predict(real, gen.samples, split.max_value)
    per_class = [float((predicted[labels == c] == c).mean()) for c in range(10)]
    # Classifier-accuracy score: as many cGAN samples per class as real training images.
    counts = np.bincount(split.y_train, minlength=10)
    synth_labels = np.repeat(np.arange(10), counts)
    synth = np.concatenate([client.generate(f"{name}-cgan", len(chunk), seed=SEED + 1 + i,
                                            labels=chunk.tolist()).samples
                            for i, chunk in enumerate(np.array_split(
                                synth_labels, -(-len(synth_labels) // CHUNK)))])
    fresh = train_classifier(synth, synth_labels, split.max_value, clf_epochs)
    fresh_acc = float((predict(fresh, split.X_test, split.max_value)[0] == split.y_test).mean())
    rows = gen.samples.reshape(10, PER_CLASS, -1)[:, :8]  # one row of 8 per class
    # One row of 8 per class (sample_fd's grid of the same model is <name>-cgan.png).
    grid = write_grid(out_dir / f"{name}-cgan-by-class.png", rows, split.max_value, 8)
    return {"label_share": float((predicted == labels).mean()), "per_class": per_class,
            "cas_accuracy": fresh_acc, "cas_score": fresh_acc / real_acc, "grid": grid}


def sample_fd(client: LatentwatchClient, model: str, n: int, split: Split, real: Classifier,
              test_feats: NDArray, out_dir: Path) -> dict[str, Any]:
    samples = np.concatenate([client.generate(model, min(CHUNK, n - s), seed=SEED + s).samples
                              for s in range(0, n, CHUNK)])
    _, feats = predict(real, samples, split.max_value)
    grid = write_grid(out_dir / f"{model}.png", samples[:64], split.max_value, 8)
    return {"fd": frechet_distance(feats, test_feats), "grid": grid}


def pix2pix_figures(client: LatentwatchClient, name: str, split: Split, real: Classifier,
                    work: Path, out_dir: Path) -> dict[str, Any]:
    from latentwatch.data.pairs import edge_maps
    from latentwatch.export.generator_graphs import choose_dropout
    from latentwatch.export.generator_run import load_generator_run

    run_dir = work / f"run-{name}-pix2pix"
    inputs = load_generator_run(run_dir)
    with np.load(run_dir / "splits.npz", allow_pickle=False) as splits:
        train_rows, held = splits["train"], splits["held_out"]
    true = split.X_train[held]
    sketch = edge_maps(true, (1, 28, 28), split.max_value)
    translated = np.concatenate([client.translate(f"{name}-pix2pix", sketch[s:s + CHUNK]
                                                  .reshape(-1, 1, 28, 28))
                                 for s in range(0, len(sketch), CHUNK)]).reshape(len(true), -1)
    mean_image = split.X_train[train_rows].mean(0)
    l1 = float(np.abs(translated - true).mean())
    baselines = {"edge_map": float(np.abs(sketch - true).mean()),
                 "mean_image": float(np.abs(mean_image - true).mean())}
    _, choice = choose_dropout(inputs, inputs.model.generator)  # type: ignore[arg-type]
    feats = [predict(real, x, split.max_value)[1] for x in (translated, true)]
    tiles = np.stack([sketch[:8], translated[:8], true[:8]], 1)
    return {"l1": l1, "baselines": baselines, "ratio_to_best": l1 / min(baselines.values()),
            "fd_translated_vs_true": frechet_distance(*feats), "n_pairs": len(true),
            "dropout_l1": {"eval": choice.l1_eval, "train": choice.l1_train,
                           "fixed_mask": choice.l1_fixed_mask, "exported_with_mask":
                           choice.at_inference},
            "grid": write_grid(out_dir / f"{name}-pix2pix.png", tiles, split.max_value, 3)}


def traversal_figures(client: LatentwatchClient, model: str, split: Split,
                      out_dir: Path) -> dict[str, Any]:
    max_value = split.max_value
    t = client.traverse(model)
    mu, _ = client.encode(model, split.X_test[:ACTIVE_UNIT_ROWS])
    mu_variance = mu.astype(np.float64).var(0)  # (Z,) across real images
    sweep = t.samples.reshape(len(t.dimensions), t.values.shape[0], -1)
    effect = np.abs(sweep - sweep.mean(1, keepdims=True)).mean(1)  # (D, F) per pixel
    top = max(1, int(TOP_PIXEL_FRACTION * effect.shape[1]))
    share = np.sort(effect, 1)[:, -top:].sum(1) / np.maximum(effect.sum(1), 1e-12)
    active = [i for i, d in enumerate(t.dimensions) if d not in t.inactive_dimensions]
    order = sorted(active, key=lambda i: -t.change[i])[:10]
    grid = write_grid(out_dir / f"{model}-traversal.png", sweep[order], max_value,
                      t.values.shape[0]) if order else None
    return {"latent_dim": len(t.dimensions), "active": len(active),
            "inactive_threshold": t.inactive_threshold,
            "active_units": int((mu_variance > ACTIVE_UNIT_VARIANCE).sum()),
            "encoder_mean_variance_per_dim": [round(float(v), 4) for v in mu_variance],
            "concentration_active_mean": float(share[active].mean()) if active else None,
            "concentration_per_dim": [round(float(s), 4) for s in share],
            "change_per_dim": [round(float(c), 4) for c in t.change], "grid": grid}


def throughput(client: LatentwatchClient, model: str, version_dir: Path, latent_dim: int,
               duration_s: float) -> dict[str, float]:
    import onnxruntime as ort

    def rate(call: Any) -> float:
        call()
        n, start_s = 0, time.perf_counter()
        while time.perf_counter() - start_s < duration_s:
            call()
            n += REQUEST_SAMPLES
        return n / (time.perf_counter() - start_s)

    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(str(version_dir / "generator.onnx"), options,
                                   providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(SEED)
    feeds: dict[str, NDArray] = {"z": rng.standard_normal((REQUEST_SAMPLES, latent_dim))
                                 .astype(np.float32)}
    if any(i.name == "label" for i in session.get_inputs()):
        feeds["label"] = np.arange(REQUEST_SAMPLES, dtype=np.int64) % 10
    return {"grpc_samples_per_s": rate(lambda: client.generate(model, REQUEST_SAMPLES, seed=1)),
            "onnx_samples_per_s": rate(lambda: session.run(None, feeds))}


def run_dataset(name: str, split: Split, target: str, repo: Path, work: Path,
                args: argparse.Namespace, clf_epochs: int, fd_samples: int,
                out_dir: Path) -> dict[str, Any]:
    real = train_classifier(split.X_train, split.y_train, split.max_value, clf_epochs)
    predicted, test_feats = predict(real, split.X_test, split.max_value)
    real_acc = float((predicted == split.y_test).mean())
    n_fd = min(len(split.X_test), fd_samples)  # every FD compares n_fd rows with n_fd
    test_feats = test_feats[:n_fd]
    _, train_feats = predict(real, split.X_train[:n_fd], split.max_value)
    result: dict[str, Any] = {"n_train": len(split.X_train), "classifier_test_accuracy": real_acc,
                              "fd_samples": n_fd,
                              "fd": {"real_train_floor": frechet_distance(train_feats,
                                                                          test_feats)}}
    with LatentwatchClient(target, timeout_s=600) as client:
        result["cgan"] = cgan_figures(client, name, split, real, real_acc, clf_epochs, out_dir)
        for kind in ("gan", "cgan", "vae"):
            result["fd"][kind] = sample_fd(client, f"{name}-{kind}", n_fd, split, real,
                                           test_feats, out_dir)
        result["pix2pix"] = pix2pix_figures(client, name, split, real, work, out_dir)
        if name == "mnist":
            result["traversal"] = {f"beta{b:g}": traversal_figures(
                client, f"{name}-vae" if b == 1 else f"{name}-beta{b:g}", split,
                out_dir) for b in BETAS}
        for kind in ("gan", "cgan"):
            version = max((repo / f"{name}-{kind}").glob("[0-9]*"), key=lambda p: int(p.name))
            latent = json.loads((version / "manifest.json").read_text())["generation"]
            result[f"throughput_{kind}"] = throughput(client, f"{name}-{kind}", version,
                                                      latent["latent_dim"],
                                                      0.5 if args.quick else 3.0)
    return result


def print_tables(results: dict[str, Any]) -> None:
    for name, r in results["datasets"].items():
        c, p, fd = r["cgan"], r["pix2pix"], r["fd"]
        want = TARGETS.get(name, {})
        print(f"\n== {name} ({r['n_train']} training rows; seconds {r['train_s']})")
        print(f"real classifier test accuracy   {r['classifier_test_accuracy']:.4f}")
        print(f"cGAN label share                {c['label_share']:.4f}  target >= "
              f"{want.get('label_share', '-')}")
        print(f"classifier-accuracy score       {c['cas_score']:.4f}  (fresh classifier "
              f"{c['cas_accuracy']:.4f}) target >= {want.get('cas', '-')}")
        print("Fréchet distance vs real test   " + "  ".join(
            f"{k} {v if isinstance(v, float) else v['fd']:.3f}" for k, v in fd.items()))
        b = p["baselines"]
        print(f"pix2pix L1 {p['l1']:.3f}  edge map {b['edge_map']:.3f}  mean image "
              f"{b['mean_image']:.3f}  ratio to best {p['ratio_to_best']:.3f} (target <= 0.5)"
              f"  FD {p['fd_translated_vs_true']:.3f}")
        d = p["dropout_l1"]
        print(f"pix2pix dropout L1: eval {d['eval']:.3f}  train mode {d['train']:.3f}  fixed "
              f"mask {d['fixed_mask']:.3f}  (exported with mask: {d['exported_with_mask']})")
        for beta, t in r.get("traversal", {}).items():
            conc = t["concentration_active_mean"]
            print(f"traversal {beta:7s} active {t['active']:2d}/{t['latent_dim']} (threshold "
                  f"{t['inactive_threshold']:.3f})  active units {t['active_units']:2d}  top-10% "
                  f"pixel share (active mean) {conc if conc is None else round(conc, 3)}")
        for kind in ("gan", "cgan"):
            t = r[f"throughput_{kind}"]
            print(f"throughput {kind:4s} gRPC {t['grpc_samples_per_s']:9.0f} samples/s   "
                  f"ONNX Runtime in-process {t['onnx_samples_per_s']:9.0f} samples/s")
    print("\nsample grids: " + ", ".join(results["grids"]))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images-dir", type=Path, required=True)
    parser.add_argument("--json", type=Path, required=True)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--cgan-epochs", type=int,
                        help="epochs of the cGAN, whose label share has a target (default: "
                             "--epochs)")
    parser.add_argument("--max-rows", type=int)
    parser.add_argument("--classifier-epochs", type=int)
    parser.add_argument("--fd-samples", type=int, help="rows per Fréchet distance set")
    parser.add_argument("--datasets")
    parser.add_argument("--work-dir", type=Path)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    datasets = (args.datasets.split(",") if args.datasets
                else list(QUICK_DATASETS if args.quick else ("mnist", "fashion-mnist")))
    max_rows = args.max_rows or (QUICK_ROWS if args.quick else None)
    clf_epochs = args.classifier_epochs or (QUICK_CLASSIFIER_EPOCHS if args.quick else 3)
    fd_samples = args.fd_samples or (QUICK_FD_SAMPLES if args.quick else 10_000)
    out_dir = args.json.resolve().parent
    out_dir.mkdir(parents=True, exist_ok=True)
    work = args.work_dir or Path(tempfile.mkdtemp(prefix="generators-"))
    repo = work / "repo"
    repo.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(1)
    started_s = time.perf_counter()
    splits = {name: load_dataset(args.images_dir / name, max_rows) for name in datasets}
    train_s = {name: train_all(name, split, repo, work, args, max_rows)
               for name, split in splits.items()}
    server, target, ready_s = start_latentwatch(repo, work / "server.log", threads=1)
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()},
                               "datasets": {}, "server_ready_s": ready_s}
    try:
        for name, split in splits.items():
            results["datasets"][name] = {"train_s": train_s[name], **run_dataset(
                name, split, target, repo, work, args, clf_epochs, fd_samples, out_dir)}
    finally:
        server.stop()
    results["grids"] = sorted(p.name for p in out_dir.glob("*.png")
                              if p.stem.startswith(tuple(datasets)))
    results["total_s"] = round(time.perf_counter() - started_s, 1)
    args.json.write_text(json.dumps(results, indent=2) + "\n")
    print_tables(results)
    print(f"total {results['total_s']} s; figures in {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`latentwatch translate`: images of a data source through a served translator (pix2pix), as a
labelled PNG grid (IN, OUT per row) and .npy.

With --sketch the inputs are edge maps of the images (the Sobel recipe pix2pix pairs are made
with, latentwatch.data.pairs), and a third column shows the image the sketch came from.
"""

from __future__ import annotations

import argparse

import numpy as np

from latentwatch.cli.connect import security_options
from latentwatch.cli.generate import READY_TIMEOUT_S, generation_facts, value_range
from latentwatch.cli.image_grid import grid_png
from latentwatch.client.client import LatentwatchClient
from latentwatch.errors import InvalidInput


def run(args: argparse.Namespace) -> None:
    from latentwatch.data import load_source

    dataset = load_source(args.data, max_rows=args.max_rows)
    with LatentwatchClient(args.server, timeout_s=args.timeout, **security_options(args)) as client:
        client.wait_ready(READY_TIMEOUT_S)
        info = client.get_model(args.model, args.version)
        image_shape = tuple(info.image_shape)
        if len(image_shape) != 3:
            raise InvalidInput(f"--model {args.model!r} takes no images: it cannot translate")
        images = dataset.X
        if args.sketch:
            from latentwatch.data.pairs import edge_maps

            if dataset.max_value is None:
                raise InvalidInput("--sketch needs an image source (its pixel maximum)")
            images = edge_maps(dataset.X, image_shape, dataset.max_value)  # type: ignore[arg-type]
        images = images.reshape(-1, *image_shape)
        out = client.translate(args.model, images, version=args.version)
    columns = [images, out] + ([dataset.X.reshape(-1, *image_shape)] if args.sketch else [])
    tiles = np.stack(columns, axis=1)  # (N, 2 or 3, C, H, W)
    labels = ["IN", "OUT"] + (["TRUE"] if args.sketch else [])
    facts = generation_facts(info)
    args.png.write_bytes(grid_png(tiles, [str(i) for i in range(len(out))], labels,
                                  value_range(facts)))
    if args.npy is not None:
        np.save(args.npy, out, allow_pickle=False)
    print(f"{len(out)} images through {info.name} version {info.version}: {args.png}"
          + (f", {args.npy}" if args.npy is not None else ""))

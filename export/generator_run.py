"""Reading a generator family's training run (models/gan_training.py) into GeneratorInputs.

The checkpoint is the plain dict models/gan_training.py describes (read by
models/gan_checkpoint.py); pix2pix's held-out pairs are the run's held-out true images
(validation_rows.npy) and their sketches, remade with the edge-map recipe the checkpoint holds.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np

from latentwatch.export.errors import ExportError
from latentwatch.export.generator_inputs import GeneratorInputs
from latentwatch.export.run_inputs import load_rows
from latentwatch.models.run_dir import CHECKPOINT_FILE, VALIDATION_ROWS_FILE
from latentwatch.repository.manifest import Provenance
from latentwatch.scoring.preprocessing import Preprocessing


def load_generator_run(run_dir: Path) -> GeneratorInputs:
    """The generator inputs of a gan, cgan or pix2pix run directory."""
    from latentwatch.data.pairs import edge_maps
    from latentwatch.models.checkpoint import CheckpointError
    from latentwatch.models.gan import GANConfig
    from latentwatch.models.gan_checkpoint import load_gan_checkpoint

    run_dir = Path(run_dir)
    try:
        model, checkpoint = load_gan_checkpoint(run_dir / CHECKPOINT_FILE)
    except CheckpointError as err:
        raise ExportError(str(err)) from err
    config = checkpoint.config
    if config.output != "sigmoid":
        raise ExportError(f"{run_dir}: generator output {config.output!r}: export maps the "
                          "sigmoid's model space [0, 1] back to data units only")
    preprocessing = Preprocessing(**checkpoint.preprocessing)
    provenance = Provenance(**checkpoint.provenance)
    shape = list(checkpoint.image_shape or (len(preprocessing.shift),))
    inputs = GeneratorInputs(
        model=model, model_kind=checkpoint.kind, sample_shape=shape,
        preprocessing=preprocessing, provenance=provenance,
        stabilisation=checkpoint.stabilisation, feature_names=provenance.feature_names,
    )
    if isinstance(config, GANConfig):
        return replace(inputs, latent_dim=config.latent_dim, n_classes=config.n_classes,
                       class_names=checkpoint.class_names)
    recipe, pixel_range = checkpoint.edge_map, checkpoint.output_range
    if recipe is None or pixel_range is None or checkpoint.image_shape is None:
        raise ExportError(f"{run_dir}: a pix2pix checkpoint without its edge-map recipe, pixel "
                          "range or image shape")
    images = load_rows(run_dir / VALIDATION_ROWS_FILE, len(preprocessing.shift),
                       "held-out images")
    sketches = edge_maps(images, checkpoint.image_shape, pixel_range[1], recipe)
    return replace(inputs, heldout_pairs=(sketches.reshape(-1, *shape).astype(np.float32),
                                          images.reshape(-1, *shape)))

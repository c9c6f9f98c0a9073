"""Import a trained nnU-Net v2 model as a glioseg model (a pre-trained start for fine-tuning).

nnU-Net v2 keeps a trained model as::

    RESULTS/DatasetXXX_Name/nnUNetTrainer__nnUNetPlans__3d_fullres/
        plans.json  dataset.json  fold_K/checkpoint_final.pth (and checkpoint_best.pth)

:func:`import_nnunet` reads these files itself (nnU-Net is not needed), rebuilds the same
network with glioseg's nnU-Net builder from ``plans.json`` (``architecture``:
``network_class_name`` + ``arch_kwargs``; the pre-2.3 plans format is converted the way nnU-Net
converts it), loads the weights and maps them so that the result is an ordinary glioseg model:

Checkpoint
    ``checkpoint_final.pth`` is a ``torch.save`` pickle.  It is read only with
    ``torch.load(weights_only=True)``, PyTorch's restricted unpickler, which rebuilds tensors and
    plain containers and refuses every other global.  nnU-Net >= 2.6 also stores numpy scalars
    (``_best_ema`` and the logged losses and pseudo-Dice values are ``numpy.float32``), so the
    exact globals that rebuild a numeric numpy scalar are allowed for this one call:
    ``numpy.core.multiarray.scalar`` (also under its numpy-2 name ``numpy._core.multiarray.scalar``),
    ``numpy.dtype`` and numpy's numeric dtype classes (``Float32DType`` ...).  They create a
    number from a dtype and raw bytes and run no other code.  A file that needs anything else
    is refused with an :class:`~glioseg.errors.InputError` naming the offending global; nothing
    in it is executed.  Only ``network_weights``, ``init_args.configuration``, ``trainer_name``
    and ``current_epoch`` are used.

Axes
    nnU-Net's readers (``SimpleITKIO``, ``NibabelIO``) hand the network arrays in reversed voxel
    order (SimpleITK's z, y, x), and the plans then transpose them by ``transpose_forward``; the
    configuration's ``spacing``, ``patch_size``, ``median_image_size_in_voxels``, ``kernel_sizes``
    and ``strides`` are in that order.  glioseg reads NIfTI voxel axes as stored (nibabel's i, j,
    k).  Network axis ``d`` is therefore glioseg axis ``reversed[transpose_forward[d]]``; spacing,
    patch, median shape, kernel sizes and strides are reordered, and every convolution kernel
    is transposed to match, so that the imported network applied to glioseg's arrays computes
    nnU-Net's function on nnU-Net's arrays (tested to float precision).  ``*WithReorient``
    readers reorient to RAS first; glioseg does not, which is reported as a warning (axes are
    matched, flips are not; nnU-Net trains with mirroring on every axis).

Channels
    ``dataset.json`` ``channel_names`` are matched to glioseg's t1n, t1c, t2w, t2f by name
    (``T1``/``T1n``/``native`` -> t1n, ``T1ce``/``T1c``/``T1Gd`` -> t1c, ``T2``/``T2w`` -> t2w,
    ``FLAIR``/``T2f`` -> t2f; or given with ``channels=``) and the input channels of the first
    convolution are permuted, so the imported model takes glioseg's order.

Outputs
    *Region-based* models (labels given as lists, BraTS style) output one sigmoid logit per
    region.  WT, TC and ET are recognised structurally: three regions ``WT ⊃ TC ⊃ ET`` with 3,
    2 and 1 labels; the rows of every (deep-supervision) output convolution are reordered (and
    any other region dropped).  *Softmax* models (one integer per label) are supported through
    :class:`~glioseg.models.nnunet.SoftmaxRegionUNet`, which computes the exact region logits
    ``logsumexp(z[R]) - logsumexp(z[not R])``; their labels are recognised by name (edema/SNFH,
    necrosis/NCR/NETC, enhancing/ET; or given with ``tissue_labels=``), and any other class
    (e.g. a resection cavity) counts as outside every region.

Preprocessing
    The plan records the configuration's spacing, patch and batch size.  Every channel must use
    nnU-Net's ``ZScoreNormalization``, which is glioseg's ``zscore-nonzero`` when
    ``use_mask_for_norm`` is on (nnU-Net turns it on for skull-stripped brains); otherwise a
    warning says that glioseg will normalise differently.  nnU-Net resamples images with cubic
    splines, glioseg trilinearly.

Reading the results folder (folder layout, checkpoint, plans) lives in
:mod:`glioseg.models.nnunet_results`, the mapping of axes, channels, outputs and weights in
:mod:`glioseg.models.nnunet_mapping`; this module puts them together.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from glioseg.data.modalities import MODALITIES
from glioseg.errors import ConfigError, InputError
from glioseg.models import ModelConfig, build_model
from glioseg.models.checkpoint import DISCLAIMER, canonical_state_dict
from glioseg.models.nnunet import resolve_op
from glioseg.models.nnunet_mapping import (
    CHANNEL_ALIASES,
    SEG_LAYER,
    TISSUE_ALIASES,
    channel_order,
    convert_weights,
    dataset_labels,
    input_weight_names,
    network_axes,
    region_rows,
    reorder_axes,
    softmax_regions,
)
from glioseg.models.nnunet_results import (
    NETWORKS,
    load_nnunet_checkpoint,
    locate_checkpoint,
    network_architecture,
    read_result_json,
    resolve_configuration,
    strip_prefixes,
)


@dataclass
class ImportedModel:
    """An nnU-Net model turned into glioseg's form; :meth:`save` writes ``model.safetensors`` + ``model.json``.

    Attributes
    ----------
    state_dict : weights for ``build_model(config)`` (glioseg channel order and axes)
    config : model configuration (family ``nnunet``, nnU-Net's ``arch_kwargs`` in glioseg axes)
    plan : :class:`glioseg.models.plan.Plan` as a dict
    imported_from : provenance (files, checksum, trainer, fold, epoch, channel/output/axis mappings)
    warnings : differences that do not stop the import (one line each)
    metrics : nnU-Net's validation Dice of this fold when ``fold_K/validation/summary.json`` exists
    """

    state_dict: dict[str, torch.Tensor]
    config: ModelConfig
    plan: dict[str, Any]
    imported_from: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)

    def info(self) -> dict[str, Any]:
        """The ``model.json`` content (besides format and versions, which ``save_model`` adds)."""

        return {
            "plan": self.plan,
            "model_config": self.config.to_dict(),
            "recipe": None,
            "split": None,
            "seed": None,
            "metrics": self.metrics,
            "imported_from": self.imported_from,
            "warnings": self.warnings,
            "disclaimer": DISCLAIMER,
        }

    def save(self, out_dir: str | Path) -> tuple[Path, Path]:
        """Write ``OUT/model.safetensors`` and ``OUT/model.json`` (atomically; a run-folder-like model)."""
        from glioseg.models.checkpoint import save_model

        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        return save_model(self.state_dict, self.info(), out / "model")


# --------------------------------------------------------------------------- import


def import_nnunet(
    source: str | Path,
    fold: int | str = 0,
    checkpoint_name: str = "checkpoint_final.pth",
    configuration: str | None = None,
    channels: list[str] | None = None,
    tissue_labels: dict[str, int] | None = None,
) -> ImportedModel:
    """Turn a trained nnU-Net v2 model into a glioseg model.

    Parameters
    ----------
    source : the trainer folder (``.../nnUNetTrainer__nnUNetPlans__3d_fullres``), its dataset
        folder when that holds one trainer folder, or a checkpoint file inside ``fold_K``
    fold : fold number or ``"all"`` (ignored when ``source`` is a checkpoint file)
    checkpoint_name : ``checkpoint_final.pth`` or ``checkpoint_best.pth``
    configuration : nnU-Net configuration; default: the one the checkpoint was trained with
    channels : glioseg modality of each nnU-Net input channel, in nnU-Net's order (default: by name)
    tissue_labels : softmax models only: ``{"NETC": i, "SNFH": j, "ET": k}`` (default: by label name)

    Returns
    -------
    :class:`ImportedModel`; ``build_model(result.config)`` loads ``result.state_dict`` and maps
    ``(B, 4, X, Y, Z)`` glioseg inputs to ``(B, 3, X, Y, Z)`` WT, TC, ET logits.

    Raises
    ------
    InputError
        Missing or unreadable files, a checkpoint that is not weights-only loadable.
    ConfigError
        Unsupported network, configuration, normalisation, channels or labels; weights that do
        not fit the architecture in ``plans.json``.

    Examples
    --------
    >>> model = import_nnunet("nnUNet_results/Dataset137_BraTS2021/nnUNetTrainer__nnUNetPlans__3d_fullres",
    ...                       fold=0)  # doctest: +SKIP
    >>> model.save("models/brats-nnunet-fold0")  # doctest: +SKIP
    """
    from glioseg.models.memory import estimate_training_memory
    from glioseg.models.plan import Plan, default_memory_budget_gib

    source = Path(source)
    trainer_dir, checkpoint_path = locate_checkpoint(source, fold, checkpoint_name)
    plans_path, dataset_path = trainer_dir / "plans.json", trainer_dir / "dataset.json"
    plans, dataset = read_result_json(plans_path), read_result_json(dataset_path)
    checkpoint = load_nnunet_checkpoint(checkpoint_path)
    weights = strip_prefixes(checkpoint["network_weights"])
    init_args = checkpoint.get("init_args") if isinstance(checkpoint.get("init_args"), dict) else {}
    trained_configuration = init_args.get("configuration")
    folder_parts = trainer_dir.name.split("__")
    if configuration is None:
        configuration = trained_configuration or (folder_parts[2] if len(folder_parts) == 3 else None)
    if configuration is None:
        raise ConfigError(
            f"cannot tell the nnU-Net configuration of {checkpoint_path}; pass it (--configuration)"
        )
    if trained_configuration and configuration != trained_configuration:
        raise ConfigError(
            f"{checkpoint_path} was trained with configuration {trained_configuration!r}, not {configuration!r}"
        )
    warnings: list[str] = []

    config = resolve_configuration(plans, configuration, plans_path)
    try:
        class_name, nn_kwargs = network_architecture(config)
    except KeyError as exc:
        raise InputError(
            plans_path, f"configuration {configuration!r} has no architecture description ({exc})"
        ) from None
    if class_name not in NETWORKS:
        raise ConfigError(f"nnU-Net network {class_name} is not supported (only {', '.join(NETWORKS)})")
    patch_n = [int(p) for p in config["patch_size"]]
    if len(patch_n) != 3 or not str(nn_kwargs.get("conv_op", "")).endswith("Conv3d"):
        raise ConfigError(
            f"configuration {configuration!r} is not 3-D; import a 3d_fullres (or other 3-D) model"
        )
    for key in ("conv_op", "norm_op", "dropout_op", "nonlin"):
        try:
            resolve_op(nn_kwargs.get(key))
        except ValueError as exc:
            raise ConfigError(f"plans.json {configuration}: {exc}") from None

    schemes = list(config.get("normalization_schemes") or [])
    if not schemes or any(s != "ZScoreNormalization" for s in schemes):
        raise ConfigError(
            f"nnU-Net normalisation {schemes} is not supported: glioseg z-scores every channel "
            "(ZScoreNormalization in every channel is required)"
        )
    masked = [bool(m) for m in config.get("use_mask_for_norm") or [False] * len(schemes)]
    if not all(masked):
        warnings.append(
            "nnU-Net z-scored over the whole image (use_mask_for_norm off); glioseg z-scores over non-zero "
            "(brain) voxels, so inputs differ until the model is fine-tuned"
        )

    axes = network_axes(plans, dataset, warnings)
    inverse = [axes.index(g) for g in range(3)]
    channel_index, channel_names = channel_order(dataset, channels, dataset_path)
    label_names, label_sets, region_based = dataset_labels(dataset, dataset_path)

    kwargs = dict(nn_kwargs)
    kwargs["kernel_sizes"] = [reorder_axes(k, inverse) for k in nn_kwargs["kernel_sizes"]]
    kwargs["strides"] = [reorder_axes(s, inverse) for s in nn_kwargs["strides"]]
    rows: list[int] | None = None
    if region_based:
        rows, outputs = region_rows(label_names, label_sets)
        n_heads = sum(1 for s in label_sets if s != frozenset({0}))
        output_info: dict[str, Any] = {"kind": "sigmoid regions", "regions": outputs}
    else:
        n_heads, regions, output_info = softmax_regions(label_names, label_sets, tissue_labels)
        output_info = {"kind": "softmax classes", **output_info}
        kwargs["softmax_classes"] = n_heads
        kwargs["softmax_regions"] = regions
    model_name = NETWORKS[class_name]
    model_config = ModelConfig(name=model_name, family="nnunet", arch_kwargs=kwargs)

    for key in weights:
        if SEG_LAYER.match(key) and weights[key].shape[0] != n_heads:
            raise ConfigError(
                f"{checkpoint_path}: output layer {key} has {weights[key].shape[0]} rows, but dataset.json "
                f"describes {n_heads} outputs"
            )
    patch = reorder_axes(patch_n, inverse)
    input_convs, input_weights = input_weight_names(model_config, patch)
    if len(input_convs) != 1:
        raise ConfigError(f"expected one convolution reading the input, found {input_convs}")
    state = convert_weights(weights, inverse, channel_index, input_weights, rows)
    network = build_model(model_config, deep_supervision=True)
    try:
        result = network.load_state_dict(state, strict=False)
    except RuntimeError as exc:
        detail = next((line.strip() for line in str(exc).splitlines()[1:] if line.strip()), str(exc))
        raise ConfigError(
            f"{checkpoint_path}: weights do not fit the network described in plans.json ({detail}); trainer "
            f"{checkpoint.get('trainer_name')} may build a custom network"
        ) from None
    problems = [f"missing {k}" for k in result.missing_keys] + [
        f"unexpected {k}" for k in result.unexpected_keys
    ]
    if problems:
        raise ConfigError(
            f"{checkpoint_path}: weights do not fit the network described in plans.json ({problems[0]}"
            f"{f' and {len(problems) - 1} more' if len(problems) > 1 else ''}); trainer "
            f"{checkpoint.get('trainer_name')} may build a custom network"
        )

    batch_size = int(config.get("batch_size", 2))
    features = [int(f) for f in kwargs["features_per_stage"]]
    estimate = estimate_training_memory(model_config, tuple(patch), batch_size)
    median = config.get("median_image_size_in_voxels")
    plan = Plan(
        model=model_name,
        target_spacing=[float(s) for s in reorder_axes(config["spacing"], inverse)],
        patch_size=[int(p) for p in patch],
        batch_size=batch_size,
        n_stages=int(kwargs["n_stages"]),
        base_features=features[0],
        max_features=max(features),
        memory_budget_gib=round(default_memory_budget_gib(), 2),
        estimated_memory_gib=round(estimate.total_gib, 2),
        median_shape=[round(float(s), 1) for s in reorder_axes(median, inverse)] if median else [],
        model_config=model_config.to_dict(),
    )
    if checkpoint_name != "checkpoint_final.pth":
        warnings.append(f"imported {checkpoint_name}, not the final checkpoint")

    metrics: dict[str, float] = {}
    summary = checkpoint_path.parent / "validation" / "summary.json"
    if summary.is_file():
        try:
            dice = json.loads(summary.read_text())["foreground_mean"]["Dice"]
            metrics["nnunet_val_dice_mean"] = float(dice)
        except (OSError, ValueError, KeyError, TypeError):
            pass
    digest = hashlib.sha256()
    with open(checkpoint_path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    imported_from = {
        "software": "nnU-Net v2",
        "results_folder": str(trainer_dir.resolve()),
        "checkpoint": str(checkpoint_path.resolve()),
        "checkpoint_sha256": digest.hexdigest(),
        "dataset_name": plans.get("dataset_name"),
        "plans_name": plans.get("plans_name"),
        "configuration": configuration,
        "trainer": checkpoint.get("trainer_name"),
        "fold": init_args.get("fold", fold),
        "epoch": checkpoint.get("current_epoch"),
        "network_class_name": class_name,
        "nnunet_arch_kwargs": nn_kwargs,
        "nnunet_channels": channel_names,
        "channel_source": {m: channel_index[i] for i, m in enumerate(MODALITIES)},
        "outputs": output_info,
        "axes": {
            "image_reader_writer": plans.get("image_reader_writer"),
            "transpose_forward": plans.get("transpose_forward", [0, 1, 2]),
            "network_axis_to_glioseg_axis": axes,
        },
        "nnunet_spacing": list(config["spacing"]),
        "nnunet_patch_size": patch_n,
        "use_mask_for_norm": masked,
    }
    return ImportedModel(
        state_dict={k: v.detach().clone() for k, v in canonical_state_dict(network).items()},
        config=model_config,
        plan=plan.to_dict(),
        imported_from=imported_from,
        warnings=warnings,
        metrics=metrics,
    )


__all__ = ["CHANNEL_ALIASES", "TISSUE_ALIASES", "ImportedModel", "import_nnunet", "load_nnunet_checkpoint"]

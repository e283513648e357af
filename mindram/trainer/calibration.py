"""Calibrated per-tag thresholds for a tagging model (``image_tagging`` task) on a labelled set.

    from mindram.trainer.calibration import calibrate_thresholds
    report = calibrate_thresholds("output/ram_demo/final", "./labelled", target="f1",
                                  config="configs/ram/run_ram_demo_synthetic.yaml")
    report["before"]["CF1"], report["after"]["CF1"], report["threshold_file"]

The labelled set is read once (its readable images; unreadable ones are left out and counted); every tag of
the set gets the threshold of :func:`mindram.metrics.calibration.best_thresholds` (tags without positives keep
the threshold the evaluation would use), written as a threshold file — one value per tag of the set, in its
order, the format of ``tagging.threshold_file`` — so ``--options tagging.threshold_file=<file>`` evaluates or
predicts with it. The report gives the metrics before and after on the calibration set itself: judge the
thresholds on a held-out set (evaluate with the file), as calibrated thresholds fit the set they came from.
"""
import logging
from pathlib import Path

import numpy as np

from ..errors import DataError, OutputExistsError
from ..metrics.calibration import best_thresholds
from ..metrics.multilabel import tagging_metrics
from ..models.ram.tags import read_thresholds
from ..utils.io import atomic_write

logger = logging.getLogger(__name__)
CALIBRATED_FILE = "calibrated_thresholds.txt"


def write_thresholds(path, thresholds):
    """Write one threshold per line (float32 round-trip precision) atomically, verifying what was written."""
    values = np.asarray(thresholds, np.float32)

    def same(tmp):
        if not np.array_equal(read_thresholds(tmp, len(values), 0.5), values):
            raise DataError(f"{path}: the thresholds read back differ from those written")

    with atomic_write(path, check=same) as tmp:
        Path(tmp).write_text("".join(f"{v:.9g}\n" for v in values.tolist()), encoding="utf-8")
    return Path(path)


def calibrate_task(task, target="f1", output=None, overwrite=False):
    """Calibrate on ``task``'s ``eval_dataset`` (an ``image_tagging`` task); returns the report also written to
    ``calibration_metrics.json``. ``output``: the threshold file (default ``output_dir/calibrated_thresholds.txt``);
    an existing file is refused unless ``overwrite``."""
    output = Path(output) if output else task.output_dir / CALIBRATED_FILE
    if output.exists() and not overwrite:
        raise OutputExistsError(f"{output} exists; pass another output or overwrite=True (--overwrite)")
    source = task.source("eval_dataset")
    model = task.model
    training = model.training
    model.set_train(False)
    try:
        scores, targets, thresholds, num_skipped = task.eval_scores(source, model)
    finally:
        model.set_train(training)
    calibrated, info = best_thresholds(scores, targets, thresholds, target)
    output.parent.mkdir(parents=True, exist_ok=True)
    write_thresholds(output, calibrated)
    report = {**info, "threshold_file": str(output), "num_images": int(len(scores)), "num_skipped": num_skipped,
              "before": tagging_metrics(scores, targets, thresholds),
              "after": tagging_metrics(scores, targets, calibrated)}
    task.save_metrics("calibration", report)
    logger.info("calibrated %d of %d tags (%s): CF1 %.4f -> %.4f on %d images; thresholds in %s",
                info["num_calibrated"], len(calibrated), target, report["before"]["CF1"], report["after"]["CF1"],
                len(scores), output)
    return report


def calibrate_thresholds(model, labelled_set, target="f1", output=None, overwrite=False, config=None,
                         overrides=None):
    """Calibrate ``model`` (a name, directory, checkpoint or tagging model) on ``labelled_set`` (a directory for
    the run config's ``eval_dataset.data_loader``, or a record source); ``config``: a run config of the
    ``image_tagging`` task (default: the task's). See :func:`calibrate_task`."""
    from .trainer import Trainer
    trainer = Trainer(args=config, task="image_tagging", model=model, eval_dataset=labelled_set,
                      overrides=overrides)
    return calibrate_task(trainer.task, target=target, output=output, overwrite=overwrite)

"""``python -m scratchlab.predict ckpt=PATH input=IMAGE_OR_DIR output=DIR``: judge images good/bad.

``model_path=FILE`` (from ``scratchlab.export``) replaces ``ckpt``; ``decision.*`` overrides thresholds.
Per image: ``<stem>_mask.png`` (models with maps; 0/255 at the image's own size), ``<stem>_overlay.png``
(scratches tinted, boxes with their areas, the decision as label) and one JSON line in
``DIR/predictions.jsonl``. Unreadable files get a warning line and an ``error`` JSON line and are skipped.
Exit code 0 when every image was judged, 1 when some were skipped, 2 for bad arguments.
Existing outputs are replaced only with ``overwrite=true``; files are written atomically, never through a
symbolic link (``scratchlab.safe_output``).
The work is done by ``scratchlab.predict_folder``.
"""
from __future__ import annotations

from omegaconf import DictConfig

from scratchlab.cli import exit_with, hydra_main
from scratchlab.config import register_resolvers

register_resolvers()


@hydra_main("predict")
def main(cfg: DictConfig) -> None:
    from scratchlab.predict_folder import run_predict

    exit_with(run_predict, cfg)


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""
``make study``: DSLA vs detectron2's FCOS and DSLA's ablations, variants x seeds x datasets with
equal budgets, each run in a fresh process; resumable (finished runs are skipped). Writes
``study.md``, ``study.json``, ``study_ap.png`` and ``study_consistency.png`` to ``--output``.

    python tools/study.py --output output/study --datasets shapes --iters 1500 --seeds 1,2,3
    python tools/study.py --output output/study-screen --iters 500 --seeds 1 \\
        --variant 'dsla-gamma0.1=dsla MODEL.DSLA.INTERVAL_RELAXATION 0.1'
    python tools/study.py --register-coco mine_train train.json images/ \\
        --register-coco mine_val val.json images/ --datasets mine --input-size mine 320 320
    python tools/study.py --output output/study --report-only

See ``--help`` for the built-in variants; trailing ``KEY VALUE`` pairs override every run's config.
"""

import sys

from dsla.study import argument_parser, main

if __name__ == "__main__":
    sys.exit(main(argument_parser().parse_args()))

#!/usr/bin/env python
"""
Train and evaluate DSLA with detectron2's training loops, from a YAML config or a LazyConfig.

    python train_net.py --config-file configs/DSLA/dsla_R_50_FPN_1x.yaml --num-gpus 8
    python train_net.py --config-file configs/DSLA/dsla_R_50_FPN_1x.yaml --eval-only \
        MODEL.WEIGHTS model.pth
    python train_net.py --config-file configs/DSLA/dsla_quickstart_shapes.py train.max_iter=300

Arguments are detectron2's (``--resume``, ``--eval-only``, ``--num-gpus``, ``--num-machines``,
``--machine-rank``, ``--dist-url``, trailing ``KEY VALUE`` overrides for YAML or ``key=value`` for
LazyConfig) plus ``--register-coco NAME JSON IMAGE_ROOT`` and ``--require-gpu``. Without a GPU, a
config asking for CUDA runs on the CPU (``--num-gpus N``: N processes with GLOO) unless
``--require-gpu`` is given.
"""

from detectron2.engine import launch

from dsla.engine import default_argument_parser, main

if __name__ == "__main__":
    args = default_argument_parser().parse_args()
    print("Command Line Args:", args)
    launch(
        main,
        args.num_gpus,
        num_machines=args.num_machines,
        machine_rank=args.machine_rank,
        dist_url=args.dist_url,
        args=(args,),
    )

#!/usr/bin/env python
"""
Train (or evaluate) DSLA as a SLURM job, through submitit: ``train_net.py``'s arguments, with the
job's size and limits instead of ``--num-gpus/--num-machines/--machine-rank/--dist-url``. The job is
requeued on preemption and time-out and continues from its last checkpoint (docs/cluster.md).

    python tools/train_slurm.py --nodes 2 --gpus-per-node 8 --partition PARTITION --time 72:00:00 \\
        --config-file configs/DSLA/dsla_R_50_FPN_1x.yaml
    python tools/train_slurm.py --cluster local --gpus-per-node 2 --time 60 \\
        --config-file configs/DSLA/dsla_quickstart_shapes.py train.max_iter=300

A SLURM job is submitted and its id logged; a local job (``--cluster local``, on this machine) is
waited for.
"""

from detectron2.utils.logger import setup_logger

from dsla.engine.slurm import slurm_argument_parser, submit


def main(argv=None):
    args = slurm_argument_parser(epilog=__doc__).parse_args(argv)
    setup_logger(name="dsla")
    job = submit(args)
    if args.cluster == "local":
        # Raises the first failing task's error.
        job.results()
    return job


if __name__ == "__main__":
    main()

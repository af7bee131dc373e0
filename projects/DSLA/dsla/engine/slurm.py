"""
Training on a SLURM cluster through submitit, without sbatch scripts (``tools/train_slurm.py``).

:func:`submit` turns ``train_net.py``'s arguments plus the job's resources
(:func:`slurm_argument_parser`) into one job of ``--nodes`` x ``--gpus-per-node`` tasks. Each task
is one worker: it initializes torch.distributed from the job's environment
(:func:`job_distributed_init`) and runs :func:`dsla.engine.main`, YAML config or LazyConfig alike.
When SLURM preempts the job or its time limit nears, submitit requeues it, and the requeued job
continues with ``--resume`` from the last checkpoint in the output directory
(:class:`TrainingJob`).

Needs submitit (the ``slurm`` extra); ``dsla.engine`` does not import this module.
"""

import argparse
import dataclasses
import logging
import math
import os
import re
from typing import Any, Dict, Tuple, Union

import submitit
import torch
import torch.distributed as dist

from detectron2.config import LazyConfig
from detectron2.engine.launch import DEFAULT_TIMEOUT
from detectron2.utils import comm

from ..config import get_dsla_cfg
from .defaults import default_argument_parser, main

__all__ = [
    "DistributedInit",
    "TrainingJob",
    "executor_parameters",
    "job_distributed_init",
    "parse_slurm_time",
    "slurm_argument_parser",
    "submit",
]

logger = logging.getLogger(__name__)

# train_net.py's launch arguments: in a job, the environment gives every task its rank and the
# address of rank 0.
_LAUNCH_OPTIONS = ("--num-gpus", "--num-machines", "--machine-rank", "--dist-url")


class _LaunchOption(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        parser.error(
            f"{option_string} is train_net.py's; a job's size is --nodes and --gpus-per-node, "
            "and each task finds its rank and rank 0 in the job's environment"
        )


def parse_slurm_time(text: str) -> int:
    """
    A time limit in one of sbatch's ``--time`` formats ("minutes", "minutes:seconds",
    "hours:minutes:seconds", "days-hours", "days-hours:minutes", "days-hours:minutes:seconds"),
    in whole minutes, rounded up.

    Raises:
        argparse.ArgumentTypeError: for another format, or a limit of zero.
    """
    match = re.fullmatch(r"(?:(\d+)-)?(\d+)(?::(\d+))?(?::(\d+))?", text.strip())
    if match is None:
        raise argparse.ArgumentTypeError(
            f"time limit {text!r} is not in one of sbatch's formats, e.g. 72:00:00 or 3-00:00:00"
        )
    days, *clock = match.groups()
    fields = [int(f) for f in clock if f is not None]
    if days is not None:
        hours, minutes, seconds = fields + [0] * (3 - len(fields))
        hours += 24 * int(days)
    elif len(fields) == 3:
        hours, minutes, seconds = fields
    else:
        minutes, seconds = fields + [0] * (2 - len(fields))
        hours = 0
    total_minutes = math.ceil(((hours * 60 + minutes) * 60 + seconds) / 60)
    if total_minutes == 0:
        raise argparse.ArgumentTypeError(f"time limit {text!r} is zero")
    return total_minutes


def _sbatch_option(text: str) -> Tuple[str, Union[str, bool]]:
    """``KEY=VALUE`` as (KEY, VALUE); a bare ``KEY`` is an sbatch flag without value (True)."""
    key, sep, value = text.partition("=")
    if not key:
        raise argparse.ArgumentTypeError(f"sbatch option {text!r} has no name")
    return key, value if sep else True


def slurm_argument_parser(epilog=None) -> argparse.ArgumentParser:
    """
    ``train_net.py``'s arguments (:func:`dsla.engine.default_argument_parser`: ``--config-file``,
    ``--resume``, ``--eval-only``, ``--register-coco``, ``--require-gpu``, trailing overrides)
    without its launch arguments (``--num-gpus``, ``--num-machines``, ``--machine-rank``,
    ``--dist-url``, rejected), plus the job's: ``--nodes``, ``--gpus-per-node``, ``--partition``,
    ``--time`` (minutes, as an int, once parsed), ``--cpus-per-task``, ``--sbatch KEY=VALUE``
    (repeated), ``--job-name``, ``--job-dir``, ``--max-timeouts`` and ``--cluster``.
    """
    parser = argparse.ArgumentParser(
        parents=[default_argument_parser()],
        add_help=False,
        # Replace the launch options by ones that fail: ignoring them would silently train on
        # fewer GPUs than a user coming from train_net.py asked for.
        conflict_handler="resolve",
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    for option in _LAUNCH_OPTIONS:
        parser.add_argument(
            option, action=_LaunchOption, default=argparse.SUPPRESS, help=argparse.SUPPRESS
        )

    job = parser.add_argument_group("job")
    job.add_argument("--nodes", type=int, default=1, help="number of nodes")
    job.add_argument(
        "--gpus-per-node",
        type=int,
        default=1,
        help="GPUs per node, one task (worker) each; SOLVER.IMS_PER_BATCH is the total over all",
    )
    job.add_argument("--partition", help="SLURM partition (default: the cluster's)")
    job.add_argument(
        "--time",
        type=parse_slurm_time,
        required=True,
        help="time limit of each run of the job, in sbatch's format (72:00:00, 3-00:00:00, "
        "minutes); the job is requeued when it runs out",
    )
    job.add_argument(
        "--cpus-per-task",
        type=int,
        help="CPUs per task (default: the cluster's); data loading needs about "
        "DATALOADER.NUM_WORKERS + 1",
    )
    job.add_argument(
        "--sbatch",
        type=_sbatch_option,
        action="append",
        metavar="KEY[=VALUE]",
        help="any other sbatch option, e.g. --sbatch account=ACCOUNT --sbatch "
        "constraint=volta32gb --sbatch exclusive (repeatable)",
    )
    job.add_argument("--job-name", default="dsla", help="SLURM job name")
    job.add_argument(
        "--job-dir",
        help="submitit's folder: the sbatch script, the pickled job and each task's stdout and "
        "stderr (default: OUTPUT_DIR/submitit; %%j is replaced by the job id)",
    )
    job.add_argument(
        "--max-timeouts",
        type=int,
        default=3,
        help="requeues after reaching the time limit (preemptions are not counted)",
    )
    job.add_argument(
        "--cluster",
        choices=("slurm", "local"),
        default="slurm",
        help="'local' runs the job's tasks on this machine, through submitit's local executor",
    )
    return parser


def executor_parameters(args: argparse.Namespace) -> Dict[str, Any]:
    """
    The parameters of submitit's ``AutoExecutor.update_parameters`` for the job ``args`` asks for:
    ``args.nodes`` nodes of ``args.gpus_per_node`` tasks with a GPU each. A local job
    (``args.cluster == "local"``) gets GPUs only where this process sees CUDA; its tasks run on
    the CPU otherwise.
    """
    has_gpus = args.cluster == "slurm" or torch.cuda.is_available()
    return {
        "name": args.job_name,
        "nodes": args.nodes,
        "tasks_per_node": args.gpus_per_node,
        "gpus_per_node": args.gpus_per_node if has_gpus else 0,
        "timeout_min": args.time,
        "cpus_per_task": args.cpus_per_task,
        "slurm_partition": args.partition,
        "slurm_additional_parameters": dict(args.sbatch or ()),
    }


@dataclasses.dataclass(frozen=True)
class DistributedInit:
    """
    How one task of a job joins torch.distributed: what detectron2's ``launch`` gives each worker
    it spawns.

    Attributes:
        rank: global rank, in [0, world_size).
        local_rank: rank on its node, in [0, workers_per_machine); also its GPU.
        world_size: number of tasks (workers) of the job.
        workers_per_machine: tasks per node.
        dist_url: ``tcp://MASTER_ADDR:MASTER_PORT`` of rank 0.
    """

    rank: int
    local_rank: int
    world_size: int
    workers_per_machine: int
    dist_url: str

    @property
    def machine_rank(self) -> int:
        return self.rank // self.workers_per_machine


def job_distributed_init() -> DistributedInit:
    """
    The :class:`DistributedInit` of the task this process runs, from the job's environment
    (submitit's ``JobEnvironment``): ranks and world size from SLURM's (or the local executor's)
    variables, rank 0's address from the job's first node, and a port derived from the job id, so
    that every task, and the job when requeued, agree on it without talking. ``$MASTER_PORT``
    overrides the port.

    Raises:
        RuntimeError: outside a submitit job.
    """
    env = submitit.helpers.TorchDistributedEnvironment()
    return DistributedInit(
        rank=env.rank,
        local_rank=env.local_rank,
        world_size=env.world_size,
        workers_per_machine=env.local_world_size,
        dist_url=f"tcp://{env.master_addr}:{env.master_port}",
    )


def _init_process_group(init: DistributedInit) -> None:
    """What detectron2's ``launch`` does in each worker before calling the main function."""
    if init.world_size == 1:
        return
    has_gpu = torch.cuda.is_available()
    if has_gpu and init.workers_per_machine > torch.cuda.device_count():
        raise RuntimeError(
            f"{init.workers_per_machine} tasks per node but this node's tasks see "
            f"{torch.cuda.device_count()} GPUs; each task expects all GPUs of its node to be "
            "visible (SLURM's default without --gpu-bind)"
        )
    logger.info(
        f"Rank {init.rank} of {init.world_size} (machine {init.machine_rank}, local rank "
        f"{init.local_rank}), rank 0 at {init.dist_url}"
    )
    dist.init_process_group(
        backend="NCCL" if has_gpu else "GLOO",
        init_method=init.dist_url,
        world_size=init.world_size,
        rank=init.rank,
        timeout=DEFAULT_TIMEOUT,
    )
    comm.create_local_process_group(init.workers_per_machine)
    if has_gpu:
        torch.cuda.set_device(init.local_rank)
    comm.synchronize()


def _resuming(args: argparse.Namespace) -> argparse.Namespace:
    """A copy of ``args`` with ``--resume``, unless an evaluation."""
    args = argparse.Namespace(**vars(args))
    # --resume would make an evaluation load the output directory's last checkpoint instead of
    # MODEL.WEIGHTS; an evaluation just starts over.
    if not args.eval_only:
        args.resume = True
    return args


class TrainingJob(submitit.helpers.Checkpointable):
    """
    What each task of the job runs: one worker of ``train_net.py``, whose rank and rank 0's
    address come from the job's environment. On preemption or time-out, submitit calls
    :meth:`checkpoint` in rank 0 and requeues what it returns.

    Args:
        args: parsed by :func:`slurm_argument_parser`.
    """

    def __init__(self, args: argparse.Namespace):
        self.args = args

    def __call__(self):
        """
        Returns:
            what :func:`dsla.engine.main` returns: the evaluation results, if any.
        """
        args = self.args
        if int(os.environ.get("SLURM_RESTART_COUNT", "0")) > 0:
            # SLURM requeued the job by itself (preemption with PreemptMode=REQUEUE, a node
            # failure), not through checkpoint(): the pickled job is still the first run's.
            args = _resuming(args)
        _init_process_group(job_distributed_init())
        return main(args)

    def checkpoint(self) -> submitit.helpers.DelayedSubmission:
        """
        The job to requeue: the same one with ``--resume``, which restores model, optimizer, LR
        scheduler and iteration from the last checkpoint that training wrote to its output
        directory (atomically, so a job killed while saving still finds a complete one). Work
        since that checkpoint is done again.
        """
        return submitit.helpers.DelayedSubmission(TrainingJob(_resuming(self.args)))


def _output_dir(args: argparse.Namespace) -> str:
    """The output directory of the config of ``args``, which also checks that config and overrides
    load before the job waits in the queue."""
    if args.config_file.endswith(".py"):
        cfg = LazyConfig.apply_overrides(LazyConfig.load(args.config_file), args.opts)
        return cfg.train.output_dir
    # The device is resolved where the job runs; the submitting host may have no GPU.
    return get_dsla_cfg(args.config_file, args.opts, device_fallback=False).OUTPUT_DIR


def submit(args: argparse.Namespace) -> submitit.Job:
    """
    Submit the training (or evaluation) of ``args`` (parsed by :func:`slurm_argument_parser`) as
    one job of ``args.nodes`` x ``args.gpus_per_node`` tasks, requeued on preemption and on
    time-out (at most ``args.max_timeouts`` times), each run after the first with ``--resume``.

    Returns:
        the submitted job: ``job.job_id``; ``job.results()`` waits for it and returns each task's
        :func:`dsla.engine.main` result.
    """
    job_dir = args.job_dir or os.path.join(_output_dir(args), "submitit")
    executor = submitit.AutoExecutor(
        folder=job_dir,
        cluster=args.cluster,
        **{f"{args.cluster}_max_num_timeout": args.max_timeouts},
    )
    executor.update_parameters(**executor_parameters(args))
    job = executor.submit(TrainingJob(args))
    logger.info(
        f"Submitted job {job.job_id} ({args.nodes} x {args.gpus_per_node} tasks); "
        f"rank 0 logs to {job.paths.stdout} and {job.paths.stderr}"
    )
    return job

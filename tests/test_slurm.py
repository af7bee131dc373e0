"""
dsla.engine.slurm (``tools/train_slurm.py``): arguments to the sbatch script, the job's environment
to torch.distributed's init, and a local job of two CPU tasks that, preempted, is requeued and
resumes from its last checkpoint.
"""

import argparse
import os
import pickle
import re
import signal
import stat
import time

import pytest
import submitit
import torch

from dsla.engine import slurm
from tools import train_slurm

from conftest import REPO_ROOT, shapes_env, short_training_opts

QUICKSTART = os.path.join(REPO_ROOT, "configs/DSLA/dsla_quickstart_shapes.yaml")


def _parse(*argv):
    return slurm.slurm_argument_parser().parse_args(list(argv))


@pytest.mark.parametrize(
    "text, minutes",
    [
        ("90", 90),
        ("1:30", 2),
        ("72:00:00", 72 * 60),
        ("2-12", (2 * 24 + 12) * 60),
        ("1-00:30", 24 * 60 + 30),
        ("0-01:00:01", 61),
    ],
)
def test_time_limit_is_read_in_every_sbatch_format_and_rounded_up_to_minutes(text, minutes):
    assert slurm.parse_slurm_time(text) == minutes


@pytest.mark.parametrize("text", ["", "72h", "1:2:3:4", "0", "0:00:00", "UNLIMITED"])
def test_time_limit_in_another_format_or_zero_is_rejected(text):
    with pytest.raises(argparse.ArgumentTypeError):
        slurm.parse_slurm_time(text)


def test_train_net_arguments_are_parsed_as_train_net_parses_them():
    args = _parse(
        "--nodes",
        "2",
        "--time",
        "1:00:00",
        "--config-file",
        "cfg.yaml",
        "--resume",
        "--register-coco",
        "mine",
        "a.json",
        "images",
        "SOLVER.MAX_ITER",
        "10",
        "train.max_iter=10",
    )
    assert args.config_file == "cfg.yaml" and args.resume and not args.eval_only
    assert args.register_coco == [["mine", "a.json", "images"]]
    assert args.opts == ["SOLVER.MAX_ITER", "10", "train.max_iter=10"]
    assert (args.nodes, args.gpus_per_node, args.time, args.cluster) == (2, 1, 60, "slurm")


@pytest.mark.parametrize("option", ["--num-gpus", "--num-machines", "--machine-rank", "--dist-url"])
def test_train_net_launch_options_are_an_error_not_silently_ignored(option, capsys):
    with pytest.raises(SystemExit):
        _parse(option, "8", "--time", "60", "--config-file", "cfg.yaml")
    assert "--nodes and --gpus-per-node" in capsys.readouterr().err


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """
    ``srun`` and ``sbatch`` on PATH, so that submitit submits to a SLURM that only answers with a
    job id.

    Returns:
        the file to which each call of sbatch appends its arguments
    """
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "sbatch_calls"
    sbatch = f'echo "$@" >> {calls}\necho "Submitted batch job 4242"'
    for name, script in [("srun", "exit 0"), ("sbatch", sbatch)]:
        path = bin_dir / name
        path.write_text(f"#!/bin/sh\n{script}\n")
        path.chmod(path.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return calls


def test_job_arguments_become_the_sbatch_script_and_the_training_is_pickled(fake_slurm, tmp_path):
    args = _parse(
        "--nodes",
        "2",
        "--gpus-per-node",
        "8",
        "--partition",
        "learnfair",
        "--time",
        "72:00:00",
        "--cpus-per-task",
        "10",
        "--sbatch",
        "account=dsla",
        "--sbatch",
        "constraint=volta32gb",
        "--sbatch",
        "exclusive",
        "--config-file",
        QUICKSTART,
        "SOLVER.MAX_ITER",
        "5",
        "OUTPUT_DIR",
        str(tmp_path / "out"),
    )
    job = slurm.submit(args)
    assert job.job_id == "4242" and len(fake_slurm.read_text().splitlines()) == 1

    sbatch = set(job.paths.submission_file.read_text().splitlines())
    for line in [
        "#SBATCH --nodes=2",
        "#SBATCH --ntasks-per-node=8",
        "#SBATCH --gpus-per-node=8",
        "#SBATCH --partition=learnfair",
        "#SBATCH --time=4320",
        "#SBATCH --cpus-per-task=10",
        "#SBATCH --account=dsla",
        "#SBATCH --constraint=volta32gb",
        "#SBATCH --exclusive",
        "#SBATCH --job-name=dsla",
        # submitit's warning before the time limit, on which it requeues.
        f"#SBATCH --signal={submitit.JobEnvironment.USR_SIG}@90",
    ]:
        assert line in sbatch
    # By default the job's folder (logs, sbatch script) is in the config's OUTPUT_DIR.
    assert job.paths.folder == tmp_path / "out" / "submitit"

    with open(job.paths.submitted_pickle, "rb") as f:
        training = pickle.load(f).function
    assert isinstance(training, slurm.TrainingJob) and training.args.opts == args.opts


def test_train_slurm_submits_a_lazyconfig_with_its_logs_in_train_output_dir(fake_slurm, tmp_path):
    lazy = os.path.join(REPO_ROOT, "configs/DSLA/dsla_quickstart_shapes.py")
    out = tmp_path / "lazy_out"
    job = train_slurm.main(["--time", "60", "--config-file", lazy, f"train.output_dir={out}"])
    assert job.job_id == "4242" and job.paths.folder == out / "submitit"
    assert "#SBATCH --ntasks-per-node=1" in job.paths.submission_file.read_text()


def test_a_config_that_does_not_load_fails_at_submission_not_in_the_queue(fake_slurm, tmp_path):
    args = _parse("--time", "60", "--config-file", QUICKSTART, "SOLVER.NO_SUCH_KEY", "1")
    with pytest.raises(AssertionError, match="Non-existent key: SOLVER.NO_SUCH_KEY"):
        slurm.submit(args)
    assert not fake_slurm.exists()


def test_a_local_job_runs_on_the_cpu_where_this_process_sees_no_gpu(monkeypatch):
    args = _parse("--cluster", "local", "--gpus-per-node", "2", "--time", "5", "--config-file", "c")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert slurm.executor_parameters(args)["gpus_per_node"] == 0
    assert slurm.executor_parameters(args)["tasks_per_node"] == 2
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert slurm.executor_parameters(args)["gpus_per_node"] == 2


# What SLURM gives task 9 of a job of 2 nodes x 8 tasks.
SLURM_TASK_9_OF_16 = {
    "SUBMITIT_EXECUTOR": "slurm",
    "SLURM_JOB_ID": "4242",
    "SLURM_NTASKS": "16",
    "SLURM_JOB_NUM_NODES": "2",
    "SLURM_NODEID": "1",
    "SLURM_PROCID": "9",
    "SLURM_LOCALID": "1",
    "SLURM_JOB_NODELIST": "gpu[017-018]",
}
# ... and the only task of a job of one.
SLURM_TASK_0_OF_1 = {
    **SLURM_TASK_9_OF_16,
    "SLURM_NTASKS": "1",
    "SLURM_JOB_NUM_NODES": "1",
    "SLURM_NODEID": "0",
    "SLURM_PROCID": "0",
    "SLURM_LOCALID": "0",
    "SLURM_JOB_NODELIST": "gpu017",
}


def _in_slurm_task(monkeypatch, variables):
    monkeypatch.delenv("MASTER_PORT", raising=False)
    monkeypatch.delenv("SLURM_RESTART_COUNT", raising=False)
    for name, value in variables.items():
        monkeypatch.setenv(name, value)


def test_slurm_environment_gives_ranks_and_rank_0_on_the_first_node(monkeypatch):
    _in_slurm_task(monkeypatch, SLURM_TASK_9_OF_16)
    init = slurm.job_distributed_init()
    assert (init.rank, init.local_rank, init.world_size) == (9, 1, 16)
    assert (init.workers_per_machine, init.machine_rank) == (8, 1)
    match = re.fullmatch(r"tcp://gpu017:(\d+)", init.dist_url)
    assert match and 1024 < int(match.group(1)) < 65536


def test_every_task_and_the_requeued_job_agree_on_the_port_without_talking(monkeypatch):
    _in_slurm_task(monkeypatch, SLURM_TASK_9_OF_16)
    url = slurm.job_distributed_init().dist_url
    _in_slurm_task(monkeypatch, {**SLURM_TASK_9_OF_16, "SLURM_PROCID": "0", "SLURM_LOCALID": "0"})
    assert slurm.job_distributed_init().dist_url == url
    _in_slurm_task(monkeypatch, {**SLURM_TASK_9_OF_16, "SLURM_JOB_ID": "4243"})
    assert slurm.job_distributed_init().dist_url != url


def test_master_port_from_the_environment_wins(monkeypatch):
    _in_slurm_task(monkeypatch, {**SLURM_TASK_9_OF_16, "MASTER_PORT": "29511"})
    assert slurm.job_distributed_init().dist_url == "tcp://gpu017:29511"


def test_more_tasks_per_node_than_visible_gpus_is_an_error_that_says_so(monkeypatch):
    _in_slurm_task(monkeypatch, SLURM_TASK_9_OF_16)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    args = _parse("--time", "60", "--config-file", "cfg.yaml")
    with pytest.raises(RuntimeError, match="8 tasks per node but this node's tasks see 1 GPUs"):
        slurm.TrainingJob(args)()


@pytest.mark.parametrize("resume", [False, True])
def test_requeued_training_resumes_and_keeps_every_other_argument(resume):
    argv = ["--time", "60", "--config-file", "cfg.yaml", "SOLVER.MAX_ITER", "10"]
    args = _parse(*(["--resume"] if resume else []), *argv)
    requeued = slurm.TrainingJob(args).checkpoint().function
    assert requeued.args.resume
    assert {**vars(requeued.args), "resume": resume} == vars(args)
    assert args.resume == resume  # the running job's arguments are left as they are


@pytest.mark.parametrize("restarts, resume", [({}, False), ({"SLURM_RESTART_COUNT": "2"}, True)])
def test_a_job_that_slurm_requeued_by_itself_resumes(monkeypatch, restarts, resume):
    _in_slurm_task(monkeypatch, {**SLURM_TASK_0_OF_1, **restarts})
    monkeypatch.setattr(slurm, "main", lambda args: args)
    args = _parse("--time", "60", "--config-file", "cfg.yaml")
    assert slurm.TrainingJob(args)().resume == resume


def test_requeued_evaluation_evaluates_the_same_weights_again():
    args = _parse("--eval-only", "--time", "60", "--config-file", "c.yaml", "MODEL.WEIGHTS", "w")
    assert not slurm.TrainingJob(args).checkpoint().function.args.resume


# The local job: long enough that the preemption, sent once the first checkpoint exists, lands
# well before the end.
MAX_ITER = 16
CHECKPOINT_PERIOD = 4
TIMEOUT_S = 240


def _tasks_of(job):
    """The pids of a local job's tasks: the children of submitit's controller, whose pid is the
    job id."""
    pid = job.job_id
    with open(f"/proc/{pid}/task/{pid}/children") as f:
        return [int(p) for p in f.read().split()]


def _wait_for(condition, deadline, what):
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"no {what} within {TIMEOUT_S} s")
        time.sleep(0.05)


def test_preempted_local_job_is_requeued_resumes_from_its_checkpoint_and_finishes(
    shapes_root, tmp_path, monkeypatch
):
    out = tmp_path / "out"
    # The tasks inherit this environment: the small shapes dataset, one thread each, and (as this
    # process sees no GPU) CPU workers with GLOO, whatever the machine has.
    for name, value in shapes_env(shapes_root).items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    args = _parse(
        "--cluster",
        "local",
        "--gpus-per-node",
        "2",
        "--time",
        "30",
        "--config-file",
        QUICKSTART,
        "SOLVER.CHECKPOINT_PERIOD",
        str(CHECKPOINT_PERIOD),
        "INPUT.MIN_SIZE_TRAIN",
        "(64,)",
        "INPUT.MAX_SIZE_TRAIN",
        "64",
        *short_training_opts(out, MAX_ITER, ims_per_batch=4),
    )
    job = slurm.submit(args)
    deadline = time.monotonic() + TIMEOUT_S
    try:
        _wait_for(lambda: (out / "last_checkpoint").exists() or job.done(), deadline, "checkpoint")
        # Neither failed before its first checkpoint nor finished before it could be preempted.
        assert not job.done(), (job.task(0).stderr() or "")[-5000:]
        # What SLURM does on preemption: submitit's signal to every task of the job.
        for pid in _tasks_of(job):
            os.kill(pid, signal.Signals["SIG" + submitit.JobEnvironment.USR_SIG])
        _wait_for(job.done, deadline, "end of the job")
    finally:
        if not job.done():
            job.cancel()
    logs = [job.task(rank).stdout() or "" for rank in range(2)]
    results = job.results()  # raises the error of a task that failed

    assert len(results) == 2
    assert "this job is preempted" in logs[0] and "Requeued job" in logs[0], logs[0][-5000:]
    starts = [int(i) for i in re.findall(r"Starting training from iteration (\d+)", logs[0])]
    assert len(starts) == 2 and starts[0] == 0, logs[0][-5000:]
    # The requeued run starts after a checkpoint of the first one.
    assert 0 < starts[1] < MAX_ITER and starts[1] % CHECKPOINT_PERIOD == 0
    assert torch.load(out / "model_final.pth", weights_only=False)["iteration"] == MAX_ITER - 1

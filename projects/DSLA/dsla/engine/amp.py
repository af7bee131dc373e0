"""
Mixed-precision training (``SOLVER.AMP.ENABLED``, LazyConfig ``train.amp.enabled``) on CUDA and on
the CPU. On CUDA it is detectron2's :class:`AMPTrainer` (float16 and a grad scaler), unchanged; on
the CPU, where that trainer asserts CUDA, it is :class:`CPUAMPTrainer`: the forward in bfloat16
under CPU autocast, which oneDNN runs on the CPU's bfloat16 matrix instructions.
"""

import contextlib
import logging
import time

import torch

from detectron2.engine import AMPTrainer, SimpleTrainer, defaults

from ..utils.precision import check_cpu_bfloat16, cpu_has_bfloat16, cpu_name

__all__ = [
    "CPUAMPTrainer",
    "amp_trainer_for_default_trainer",
    "check_cpu_bfloat16",
    "cpu_has_bfloat16",
    "cpu_name",
    "trainer_class",
]

logger = logging.getLogger(__name__)


class CPUAMPTrainer(SimpleTrainer):
    """
    detectron2's :class:`SimpleTrainer` with the forward (model and losses) under
    ``torch.autocast("cpu", dtype=torch.bfloat16)``: what :class:`AMPTrainer` does on CUDA. The
    backward and the optimizer step are outside autocast, as PyTorch recommends; the gradients
    reach the float32 parameters in float32. bfloat16 has float32's exponent range, so the losses
    need no grad scaler. DSLA computes its labels and losses in float32 under autocast too, so
    detectron2's non-finite-loss check sees float32 losses.
    """

    def __init__(self, model, data_loader, optimizer, precision=torch.bfloat16, **kwargs):
        """
        Args:
            model, data_loader, optimizer, kwargs: as for :class:`SimpleTrainer`.
            precision: the autocast dtype; bfloat16 is the one the CPU runs fast.
        """
        check_cpu_bfloat16()
        super().__init__(model, data_loader, optimizer, **kwargs)
        self.precision = precision

    def run_step(self):
        """SimpleTrainer's step with the forward under CPU autocast (as AMPTrainer's on CUDA)."""
        assert self.model.training, "[CPUAMPTrainer] model was changed to eval mode!"
        start = time.perf_counter()
        data = next(self._data_loader_iter)
        data_time = time.perf_counter() - start

        if self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        with torch.autocast("cpu", dtype=self.precision):
            loss_dict = self.model(data)
            if isinstance(loss_dict, torch.Tensor):
                losses = loss_dict
                loss_dict = {"total_loss": loss_dict}
            else:
                losses = sum(loss_dict.values())
        if not self.zero_grad_before_forward:
            self.optimizer.zero_grad()
        losses.backward()

        self.after_backward()

        if self.async_write_metrics:
            self.concurrent_executor.submit(
                self._write_metrics, loss_dict, data_time, iter=self.iter
            )
        else:
            self._write_metrics(loss_dict, data_time)

        self.optimizer.step()


def trainer_class(amp: bool, device: str) -> type:
    """
    The trainer of a model on ``device``: :class:`SimpleTrainer`, or with ``amp``
    :class:`CPUAMPTrainer` on the CPU and detectron2's :class:`AMPTrainer` elsewhere (CUDA). CPU
    AMP on a CPU without bfloat16 is refused here (:func:`check_cpu_bfloat16`), so that a caller
    asking before it builds the model and the data fails at once.
    """
    if not amp:
        return SimpleTrainer
    if torch.device(device).type != "cpu":
        return AMPTrainer
    check_cpu_bfloat16()
    logger.info("Mixed precision on the CPU: the forward runs under bfloat16 autocast.")
    return CPUAMPTrainer


@contextlib.contextmanager
def amp_trainer_for_default_trainer(trainer_cls: type):
    """
    Within the context, detectron2's ``DefaultTrainer``, which builds detectron2's ``AMPTrainer``
    itself with ``SOLVER.AMP.ENABLED`` (and that trainer asserts CUDA), builds ``trainer_cls`` of
    :func:`trainer_class` instead, with the same arguments.
    """
    amp_trainer = defaults.AMPTrainer
    defaults.AMPTrainer = trainer_cls
    try:
        yield
    finally:
        defaults.AMPTrainer = amp_trainer

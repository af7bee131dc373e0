from typing import Dict, List

import torch
from torch import Tensor

from detectron2.modeling import META_ARCH_REGISTRY, ProposalNetwork, build_backbone
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.modeling.proposal_generator import PROPOSAL_GENERATOR_REGISTRY
from detectron2.structures import ImageList

__all__ = ["DSLADetector"]


class DSLADetector(ProposalNetwork):
    """
    The DSLA detector (``MODEL.META_ARCHITECTURE: "DSLA"``): a backbone (ResNet/Swin/... + FPN) and
    the DSLA head, the proposal generator of ``MODEL.PROPOSAL_GENERATOR.NAME`` ("DSLA",
    :class:`DSLAProposalGenerator`), built with ``two_stage=False``: its detections are the model's
    output.

    Input and output follow detectron2's models: ``batched_inputs`` from a ``DatasetMapper``; in
    training a dict of losses, in inference ``[{"instances": Instances}]`` with ``pred_boxes``,
    ``scores``, ``pred_classes`` in the original image size (``height``, ``width`` of each input).

    Scripted with ``detectron2.export.scripting_with_instances`` (in eval mode), it returns, as
    detectron2's scripted RetinaNet does, the ``Instances`` of each image in the coordinates of the
    network input; ``detector_postprocess`` rescales them (``docs/deployment.md``).
    """

    @classmethod
    def from_config(cls, cfg):
        backbone = build_backbone(cfg)
        head = PROPOSAL_GENERATOR_REGISTRY.get(cfg.MODEL.PROPOSAL_GENERATOR.NAME)
        return {
            "backbone": backbone,
            "proposal_generator": head(cfg, backbone.output_shape(), two_stage=False),
            "pixel_mean": cfg.MODEL.PIXEL_MEAN,
            "pixel_std": cfg.MODEL.PIXEL_STD,
        }

    def preprocess_image(self, batched_inputs: List[Dict[str, Tensor]]) -> ImageList:
        """Normalize, pad and batch the input images."""
        images = [self._move_to_current_device(x["image"]) for x in batched_inputs]
        images = [(x - self.pixel_mean) / self.pixel_std for x in images]
        return ImageList.from_tensors(
            images,
            self.backbone.size_divisibility,
            padding_constraints=self.backbone.padding_constraints,
        )

    def forward(self, batched_inputs: List[Dict[str, Tensor]]):
        images = self.preprocess_image(batched_inputs)
        features = self.backbone(images.tensor)
        if self.training:
            if torch.jit.is_scripting():
                # TorchScript compiles nothing after a raise, so the training path (Instances
                # moved between devices, losses) stays eager-only; a scripted model cannot be
                # switched to training (its `training` is a constant), so this never runs.
                raise RuntimeError(
                    "A scripted DSLADetector runs inference only: call .eval() before scripting "
                    "it, and train the eager model"
                )
            if "instances" not in batched_inputs[0]:
                raise ValueError("DSLA needs 'instances' in its inputs in training")
            gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
            _, losses = self.proposal_generator(images, features, gt_instances)
            return losses

        results, _ = self.proposal_generator(images, features)
        if torch.jit.is_scripting():
            return results
        processed_results = []
        for results_per_image, input_per_image, image_size in zip(
            results, batched_inputs, images.image_sizes
        ):
            height = input_per_image.get("height", image_size[0])
            width = input_per_image.get("width", image_size[1])
            processed_results.append(
                {"instances": detector_postprocess(results_per_image, height, width)}
            )
        return processed_results


# Configs name it "DSLA" (MODEL.META_ARCHITECTURE); register() would take the class name.
META_ARCH_REGISTRY._do_register("DSLA", DSLADetector)

from typing import Dict, List

from torch import Tensor

from detectron2.modeling import META_ARCH_REGISTRY, ProposalNetwork
from detectron2.modeling.postprocessing import detector_postprocess
from detectron2.structures import ImageList

__all__ = ["DSLA"]


@META_ARCH_REGISTRY.register()
class DSLA(ProposalNetwork):
    """
    The DSLA detector: a backbone (ResNet/Swin + FPN) and the DSLA head, built by detectron2's
    proposal-generator registry from ``MODEL.PROPOSAL_GENERATOR.NAME: "DSLA"``.

    Input and output follow detectron2's models: ``batched_inputs`` from a ``DatasetMapper``; in
    training a dict of losses, in inference ``[{"instances": Instances}]`` with ``pred_boxes``,
    ``scores``, ``pred_classes`` in the original image size (``height``, ``width`` of each input).
    """

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
            if "instances" not in batched_inputs[0]:
                raise ValueError("DSLA needs 'instances' in its inputs in training")
            gt_instances = [x["instances"].to(self.device) for x in batched_inputs]
            _, losses = self.proposal_generator(images, features, gt_instances)
            return losses

        results, _ = self.proposal_generator(images, features)
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

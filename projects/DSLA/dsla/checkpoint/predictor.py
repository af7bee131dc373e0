import torch

from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.engine import DefaultPredictor
from detectron2.modeling import build_model

from ..utils.precision import inference_autocast
from .atomic import AtomicCheckpointer

__all__ = ["Predictor"]


class Predictor(DefaultPredictor):
    """
    detectron2's :class:`DefaultPredictor` (``predictor(bgr_image)["instances"]``) whose
    ``MODEL.WEIGHTS`` load through :class:`AtomicCheckpointer`, as data unless
    ``MODEL.WEIGHTS_ALLOW_PICKLE``, in channels-last order with ``MODEL.CHANNELS_LAST`` and under
    autocast with ``TEST.AMP.ENABLED``.
    """

    def __init__(self, cfg):
        # DefaultPredictor.__init__ loads the weights with detectron2's checkpointer, which
        # unpickles .pkl files unrestricted; its other steps are repeated here instead.
        self.cfg = cfg.clone()  # the model may modify its config
        self.model = build_model(self.cfg)
        if cfg.MODEL.CHANNELS_LAST:
            self.model.to(memory_format=torch.channels_last)
        self.model.eval()
        if len(cfg.DATASETS.TEST):
            self.metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        AtomicCheckpointer(self.model, allow_pickle=cfg.MODEL.WEIGHTS_ALLOW_PICKLE).load(
            cfg.MODEL.WEIGHTS
        )
        self.aug = T.ResizeShortestEdge(
            [cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST
        )
        self.input_format = cfg.INPUT.FORMAT
        if self.input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be RGB or BGR, got {self.input_format!r}")
        self.autocast = cfg.TEST.AMP.ENABLED

    def __call__(self, original_image):
        """detectron2's prediction of one BGR image, under autocast with ``TEST.AMP.ENABLED``."""
        with inference_autocast(self.autocast, self.cfg.MODEL.DEVICE):
            return super().__call__(original_image)

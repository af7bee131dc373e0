# The LazyConfig of fcos_mobilenet_v2_trees.yaml: the same model, data, solver and schedule, derived
# from that file so that the two cannot differ. Train with `python train_net.py --config-file
# THIS_FILE [key=value ...]`.
from dsla.model_zoo import get_config
from dsla.model_zoo.lazy import (
    lazy_dataloader,
    lazy_lr_multiplier,
    lazy_model,
    lazy_optimizer,
    lazy_train,
)

_yaml = get_config("FCOS-Baseline/fcos_mobilenet_v2_trees.yaml", device_fallback=False)

model = lazy_model(_yaml)
dataloader = lazy_dataloader(_yaml)
optimizer = lazy_optimizer(_yaml)
lr_multiplier = lazy_lr_multiplier(_yaml)
train = lazy_train(_yaml)

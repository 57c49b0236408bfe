"""auto_avsr's model, written here: Conv3d + ResNet-18 frontend, Conformer encoder, Transformer decoder, CTC."""

from trainer.model.lipreader import (
    GRAD_GROUPS,
    LipReader,
    LossOutput,
    apply_freezing,
    build_model,
    count_parameters,
)

__all__ = ["GRAD_GROUPS", "LipReader", "LossOutput", "apply_freezing", "build_model", "count_parameters"]

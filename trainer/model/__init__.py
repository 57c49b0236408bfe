"""auto_avsr's model, written here: Conv3d + ResNet-18 frontend, Conformer encoder, Transformer decoder, CTC."""

"""Frame-pooling backbones, one file each (Keras layer + ONNX lowering); listed in train/registry.py."""

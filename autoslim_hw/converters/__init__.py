"""Plain PyTorch model -> deployable file: ONNX (`onnx`), TFLite (`tflite`, flatbuffers alone)
and TorchScript (`torchscript`). Each module is imported only by the runtime that needs it."""

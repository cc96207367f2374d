"""sair-export: the deployed graphs of a SAIR checkpoint as ONNX (float32, float16) and TensorRT
engines, with a manifest that the runtime backends check (see :mod:`.cli`).

Modules: :mod:`.onnx` traces each graph, :mod:`.fp16` puts float16 into a graph, :mod:`.trt` builds
engines, :mod:`.manifest` writes and verifies ``manifest.json`` (torch-free: the runtime reads it),
:mod:`.parity` compares everything with PyTorch, :mod:`.pipeline` ties them together.
"""

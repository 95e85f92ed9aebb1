"""Models leaving hepnn: ONNX graphs with the loader's standardisation and the task's head built in.

- :mod:`hepnn.deploy.graph`: the exported module (raw inputs -> standardisation -> net -> head);
- :mod:`hepnn.deploy.sidecar`: the JSON description of its inputs and outputs;
- :mod:`hepnn.deploy.onnx`: rebuilding from a checkpoint, ``torch.onnx.export``, the onnxruntime check.
"""

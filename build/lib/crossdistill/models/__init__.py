"""Models: resolving names (folders, hub ids, offline aliases), the bi-encoder student, the cross-encoder teacher
(which folders are teachers), the ONNX/int8 export and the model card. Imports only :mod:`crossdistill.core`."""

"""The runtime of each pipeline step, as plain functions (no KFP import): what a component calls.

One module per part of the pipeline: `data` (content-hash, fetch-data, validate, normalize), `codes`
(extract-vq, build-dataset), `train` (lora-train), `evaluate` (evaluate: the checkpoint to merge and the
publish gate), `model` (fetch-weights, merge-lora, publish).
Each step function takes paths and plain values, runs the `fish-speech` command(s) of the step
(`common.run_command`) and returns the numbers its component logs as Metrics. A component in
`components/` is its typed KFP signature, one call to a function here, and its output metadata; tests
call these functions directly, without KFP.
"""

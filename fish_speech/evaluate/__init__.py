"""Scoring checkpoints by listening and by numbers: `fish-speech evaluate`.

- `metrics`: text normalisation, CER/WER, cosine similarity, duration ratio, aggregation.
- `choice`: the rule that picks a checkpoint from the scores, and the publish gate.
- `models`: the ASR (Whisper) and speaker-verification (WavLM x-vector) models through `transformers`,
  fetched like the base weights, and tiny random ones in the real layout for tests and the demo.
- `sentences`: the held-out validation clips `train` scored, per speaker, with a training prompt.
- `report`: `eval.json`, `eval.csv` and the self-contained `report.html`.
- `run`: the whole evaluation.
"""

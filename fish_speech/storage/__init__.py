"""Weights and data from Hugging Face, GCS, S3/MinIO or local folders; publishing results back.

- `uri`: parse `hf://`, `gs://`, `s3://`, `tiny` and local paths.
- `s3`, `gcs`, `local`: one backend each behind `base.ObjectStore`; `hf`: Hugging Face Hub.
- `transfer`: parallel, resumable, verified transfers with retries and a progress bar.
- `fetch`: mirror a prefix into a folder; `publish`: upload a folder.
- `manifest`: `MANIFEST.sha256` and the content hash; `safepath`: keys never escape the target.
"""

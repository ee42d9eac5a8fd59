"""Kubernetes glue of the training step: Kubeflow Trainer TrainJobs (no KFP import here)."""

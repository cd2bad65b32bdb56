"""ddflow: reproducible dataset-distillation pipelines (library half; the workflow lives in workflow/)."""

__version__ = "0.1.0"

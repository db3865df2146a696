"""Applications built on the pipeline: batch jobs behind the CLI, the demo."""

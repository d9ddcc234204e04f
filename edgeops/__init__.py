"""edgeops: a declarative MLOps pipeline for on-device deep learning. The core never imports dagster."""

__version__ = "0.1.0"

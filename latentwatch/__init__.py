"""latentwatch: anomaly scoring and bias reports with deep generative models."""

__version__ = "0.1.0"

"""Launch learning-rate sweeps: on this machine as processes, or on Kubernetes as objects."""

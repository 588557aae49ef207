"""Launching: turning a run request into processes (local torchrun, Slurm), the reference
recipes' environment-variable interface, cluster configuration and experiment folders."""

"""One run pipeline for the command line and the worker: load → calibrate → prune → checkpoints → report."""

"""Training: progressive shrinking with distillation, or the sandwich rule; DDP under torchrun.

``python -m ofa_edge.train --recipe R --out DIR`` is the torchrun entry point.
"""

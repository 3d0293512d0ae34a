"""The trainkube trainer: the program every worker pod runs (pre-training, fine-tuning, eval).

It reads a run-config file written by the operator and the distributed environment that
torchrun or the deepspeed launcher sets; it never imports kopf and needs no cluster.
"""

"""The operator: kopf handlers (thin) over pure builders, decisions and status derivation.

`naming` and `layout` say where things are; `runspec` turns a job and its plan into the
trainer's run config; `children` builds the child objects; `status` derives status from what
is observed; `reconcile` reads, decides and writes; `handlers` wires it to kopf.
"""

"""Before training: what a stage costs, and which base model to train.

- `ftp.planning.sizing`: a model's size and a stage's memory and FLOPs, estimated;
- `ftp.planning.rows`: the stage's rows as its method trains them, the longest it keeps;
- `ftp.planning.probe`: steps of the stage's method on that batch, measured in a child;
- `ftp.planning.stages`: the above for one stage; `ftp.planning.plan` for every stage
  (``ftp plan``, ``ftp run --preflight``);
- `ftp.planning.describe` and `ftp.planning.compare`: ``ftp models compare``.

Nothing here is imported by the light commands (``ftp validate``, ``ftp --help``).
"""

"""What every stage and script of the toolkit shares at run time, whatever it trains or evaluates:

config.py       the one config system: typed dataclasses <-> YAML, ``key.sub=value`` overrides
atomic.py       durable atomic file writes (over gym_qa.atomic_files), and the repair of a run folder
                after a kill
checkpoint.py   checkpoint files: safetensors + JSON, written atomically, pruned, found again
machine.py      the description of the machine a run was measured on
lifecycle.py    the run lifecycle every trainer is a recipe over: run folder, config check on
                ``--resume``, SIGTERM → checkpoint and stop, non-finite-loss guard, history,
                ``metrics.json`` written last, exit codes and ``error.log``
"""

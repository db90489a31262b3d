"""Hydra sweeper around Optuna >= 5: persistent, resumable, parallel and pruned studies (``hparams_search=optuna``).

Found by hydra-core 1.3's scan of the ``hydra_plugins`` namespace package and registered through the
``hydra.plugins`` entry point. The modules whose names start with ``_`` hold the implementation; Hydra's scan
skips them, so importing Hydra does not import Optuna.
"""

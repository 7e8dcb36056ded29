"""Operations around the ML core: the `r1` command line, the Prefect/DVC/MLflow orchestration the flow runs on,
and the local services. Stages and the core package never import from here (tests/unit/test_layers.py)."""

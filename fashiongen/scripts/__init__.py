"""The bodies of the commands: `fashiongen sample|evaluate|train|app` (fashiongen/cli.py), and the repo's top-level
sample.py, evaluate.py, train.py and app.py, which are shims over the same main(argv)."""

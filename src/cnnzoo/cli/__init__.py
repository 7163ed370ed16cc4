"""The `cnnzoo` command line: one entry point, one verb per capability."""

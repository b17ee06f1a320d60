"""The applications built on the engine: the command line and the web apps."""

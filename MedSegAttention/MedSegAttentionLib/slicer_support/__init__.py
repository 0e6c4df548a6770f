"""Qt-free support of the Slicer module: the child-process runner, dependency installs, panel texts, level timing."""

"""ALFWorld on the TextWorld engine, offline: a procedural game generator (``generator``), the
game-file cache and official-dataset reader (``games``), the engine wrapper (``engine``), the
state picture (``render``) and the language env (``env``, registered as ``alfworld/AlfWorld-v0``).

Nothing is imported here: TextWorld and ALFWorld load only when an env is built.
"""

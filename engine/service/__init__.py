"""The engine as a process of its own: the app and `orchard attach` are its clients.

``service`` holds the logic (one run at a time, its history, the attached clients),
``process`` is ``python -m engine.service``, ``connection`` is the per-user connection file,
``launcher`` finds or starts the engine for a client. The wire is ``engine/rpc/engine.proto``.
"""

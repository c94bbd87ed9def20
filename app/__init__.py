"""Orchard's desktop app (PySide6): thin views over engine/.

Importing the package guards against a PySide6 bug that would otherwise crash a long run
(see app/qt_compat.py), so every entry point (main, tests, scripts) is covered.
"""

from app.qt_compat import guard_singleton_refcounts

guard_singleton_refcounts()

"""The extension project's own package.

The events application (with its schedulable) is
:class:`processor.eaas.app.CancelEventsApplication`, declared in pyproject.toml under
``[tool.poetry.plugins."connect.eaas.ext"]``; its descriptor is ``processor/eaas/extension.json``
(``extension.json`` in this folder links to it). Nothing lives here: Poetry installs a project
through a package of its own.
"""

"""A local stand-in for Connect's DevOps side, so that connect-extension-runner (``cextrun``) runs
the extension against the mock marketplace exactly as Connect would run it: over TLS, with its
tasks from a websocket, its start-up validation included.

- :mod:`.hub`: the websocket (``connect.eaas.core.proto`` version 2) and the REST routes the
  runner calls; tasks come from the marketplace store's own cancel requests and from schedules;
- :mod:`.gateway`: one ASGI app, the hub's routes beside the marketplace's;
- :mod:`.pki`: a throwaway local CA and the certificates the servers present;
- :mod:`.index`: the runner's "latest release" lookup, answered on loopback;
- :mod:`.variables`: the extension's variables, read from a YAML file;
- :mod:`.devloop`: what ``cancel-processor mock-marketplace --devops`` starts and prints.
"""

from cancel_sandbox.devops.gateway import DevopsGateway
from cancel_sandbox.devops.hub import EVENT_TYPE, DevopsHub, DevopsSettings
from cancel_sandbox.devops.index import IndexAnswer
from cancel_sandbox.devops.pki import LocalPki, local_pki
from cancel_sandbox.devops.variables import Variable, VariablesError, load_variables

__all__ = [
    "EVENT_TYPE",
    "DevopsGateway",
    "DevopsHub",
    "DevopsSettings",
    "IndexAnswer",
    "LocalPki",
    "Variable",
    "VariablesError",
    "load_variables",
    "local_pki",
]

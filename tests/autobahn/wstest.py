"""Runs Autobahn's `wstest` from the install made by tests/autobahn/run.sh.

    python2.7 wstest.py SITE_DIR [wstest arguments...]

SITE_DIR holds the `pip install --target` of autobahntestsuite and its pinned dependencies.

With AUTOBAHN_EXTERNAL_PORT set, `-m fuzzingserver` accepts handshakes whose Host header names
that port instead of its own: autobahn refuses (HTTP 400) a Host port other than the one it
listens on unless told the "external port" it is reached under, and wsnorm, like most reverse
proxies, forwards the client's Host header (which names wsnorm's port) to the backend as it is.
"""
import os
import site
import sys

site.addsitedir(sys.argv.pop(1))

external_port = os.environ.get("AUTOBAHN_EXTERNAL_PORT")
if external_port:
    from autobahntestsuite import fuzzing

    _init = fuzzing.FuzzingServerFactory.__init__

    def _init_with_external_port(self, *args, **kwargs):
        _init(self, *args, **kwargs)
        self.externalPort = int(external_port)

    fuzzing.FuzzingServerFactory.__init__ = _init_with_external_port

sys.argv[0] = "wstest"
from autobahntestsuite.wstest import run  # noqa: E402

sys.exit(run())
